//! Course subscriptions, the example of the Dynamic Consistency Boundary write-ups: a course
//! has a capacity, a student may take at most [`STUDENT_COURSES_MAX`] courses, and subscribing
//! a student to a course must respect both rules at once.
//!
//! With aggregates, the two rules live in two aggregates (the course, the student) and one
//! subscription touches both: a saga, or one big aggregate. Here each event carries tags
//! (`course:c1`, `student:s7`), and [`Subscribe`] is a [`Decision`] whose query is the course's
//! events and the student's subscriptions: it folds them, decides, and the [`Decider`] appends
//! the subscription on the condition that none of those events changed in between. Two
//! subscriptions to different courses of different students never conflict; two that would
//! together overfill a course, or give a student too many courses, cannot both succeed.

use std::sync::Arc;

use eventfold::core::{EventStore, EventType, Query, QueryItem, Tag, Tags};
use eventfold::{Context, Decided, Decider, Decision, DecisionError, DomainEvent};
use serde::{Deserialize, Serialize};

/// Most courses one student may take.
pub const STUDENT_COURSES_MAX: u32 = 3;

/// A course was defined with its capacity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourseDefined {
    /// The course.
    pub course: String,
    /// How many students it takes.
    pub capacity: u32,
}

/// A course's capacity changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourseCapacityChanged {
    /// The course.
    pub course: String,
    /// How many students it takes from now on.
    pub capacity: u32,
}

/// A student subscribed to a course.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudentSubscribed {
    /// The course.
    pub course: String,
    /// The student.
    pub student: String,
}

/// What happens to courses and students.
#[derive(Clone, Debug, PartialEq, Eq, DomainEvent)]
pub enum SchoolEvent {
    /// `CourseDefined`.
    #[event(name = "CourseDefined")]
    CourseDefined(CourseDefined),
    /// `CourseCapacityChanged`.
    #[event(name = "CourseCapacityChanged")]
    CourseCapacityChanged(CourseCapacityChanged),
    /// `StudentSubscribed`.
    #[event(name = "StudentSubscribed")]
    StudentSubscribed(StudentSubscribed),
}

impl SchoolEvent {
    /// The tags each event is found by: the course's, and the student's for a subscription.
    pub fn tags(&self) -> Tags {
        let tags = match self {
            SchoolEvent::CourseDefined(e) => vec![course_tag(&e.course)],
            SchoolEvent::CourseCapacityChanged(e) => vec![course_tag(&e.course)],
            SchoolEvent::StudentSubscribed(e) => {
                vec![course_tag(&e.course), student_tag(&e.student)]
            }
        };
        Tags::new(tags).expect("two distinct tags at most")
    }
}

/// Why a course or subscription was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchoolError {
    /// The id does not make a tag (empty, too long, or with whitespace).
    #[error("{what} id {id:?} is not valid: {reason}")]
    InvalidId {
        /// `course` or `student`.
        what: &'static str,
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },
    /// Defining a course twice.
    #[error("course {0} is already defined")]
    CourseExists(String),
    /// Subscribing to a course nobody defined.
    #[error("course {0} does not exist")]
    NoSuchCourse(String),
    /// The course is full.
    #[error("course {course} is full ({capacity} students)")]
    CourseFull {
        /// The course.
        course: String,
        /// Its capacity.
        capacity: u32,
    },
    /// The student takes as many courses as allowed.
    #[error("student {student} already takes {STUDENT_COURSES_MAX} courses, the most allowed")]
    TooManyCourses {
        /// The student.
        student: String,
    },
    /// Subscribing twice to the same course.
    #[error("student {student} already takes course {course}")]
    AlreadySubscribed {
        /// The course.
        course: String,
        /// The student.
        student: String,
    },
}

fn course_tag(course: &str) -> Tag {
    Tag::new(format!("course:{course}")).expect("checked when the decision was made")
}

fn student_tag(student: &str) -> Tag {
    Tag::new(format!("student:{student}")).expect("checked when the decision was made")
}

fn check_id(what: &'static str, id: &str) -> Result<(), SchoolError> {
    Tag::new(format!("{what}:{id}"))
        .map(drop)
        .map_err(|e| SchoolError::InvalidId {
            what,
            id: id.to_owned(),
            reason: e.reason,
        })
}

fn types(names: &[&str]) -> Vec<EventType> {
    names
        .iter()
        .map(|n| EventType::new(n).expect("the event types are valid"))
        .collect()
}

/// Defining a course: refused when one with that id exists. Its boundary is the course's
/// definition alone.
#[derive(Clone, Debug)]
pub struct DefineCourse {
    /// The course.
    pub course: String,
    /// Its capacity.
    pub capacity: u32,
    exists: bool,
}

impl DefineCourse {
    /// Define `course` with `capacity`; refused when the id does not make a tag.
    pub fn new(course: &str, capacity: u32) -> Result<Self, SchoolError> {
        check_id("course", course)?;
        Ok(DefineCourse {
            course: course.to_owned(),
            capacity,
            exists: false,
        })
    }
}

impl Decision for DefineCourse {
    type Event = SchoolEvent;
    type Error = SchoolError;

    fn query(&self) -> Query {
        Query::from(
            QueryItem::new(types(&["CourseDefined"]), [course_tag(&self.course)])
                .expect("one type and one tag"),
        )
    }

    fn apply(&mut self, event: &SchoolEvent) {
        if let SchoolEvent::CourseDefined(_) = event {
            self.exists = true;
        }
    }

    fn decide(&self) -> Result<Vec<SchoolEvent>, SchoolError> {
        if self.exists {
            return Err(SchoolError::CourseExists(self.course.clone()));
        }
        Ok(vec![SchoolEvent::CourseDefined(CourseDefined {
            course: self.course.clone(),
            capacity: self.capacity,
        })])
    }

    fn stream(&self) -> String {
        format!("course-{}", self.course)
    }

    fn tags(event: &SchoolEvent) -> Tags {
        event.tags()
    }
}

/// Subscribing a student to a course: the course must exist and have room, and the student
/// must take fewer than [`STUDENT_COURSES_MAX`] courses and not this one yet. Its boundary:
/// the course's definition, capacity changes and subscriptions, and the student's
/// subscriptions.
#[derive(Clone, Debug)]
pub struct Subscribe {
    /// The course.
    pub course: String,
    /// The student.
    pub student: String,
    /// The course's capacity, once defined.
    pub capacity: Option<u32>,
    /// Students of the course.
    pub course_students: u32,
    /// Courses of the student.
    pub student_courses: u32,
    /// Whether the student already takes this course.
    pub already: bool,
}

impl Subscribe {
    /// Subscribe `student` to `course`; refused when an id does not make a tag.
    pub fn new(course: &str, student: &str) -> Result<Self, SchoolError> {
        check_id("course", course)?;
        check_id("student", student)?;
        Ok(Subscribe {
            course: course.to_owned(),
            student: student.to_owned(),
            capacity: None,
            course_students: 0,
            student_courses: 0,
            already: false,
        })
    }
}

impl Decision for Subscribe {
    type Event = SchoolEvent;
    type Error = SchoolError;

    fn query(&self) -> Query {
        Query::new([
            QueryItem::new(
                types(&[
                    "CourseDefined",
                    "CourseCapacityChanged",
                    "StudentSubscribed",
                ]),
                [course_tag(&self.course)],
            )
            .expect("three types and one tag"),
            QueryItem::new(types(&["StudentSubscribed"]), [student_tag(&self.student)])
                .expect("one type and one tag"),
        ])
        .expect("two items")
    }

    fn apply(&mut self, event: &SchoolEvent) {
        match event {
            SchoolEvent::CourseDefined(e) if e.course == self.course => {
                self.capacity = Some(e.capacity)
            }
            SchoolEvent::CourseCapacityChanged(e) if e.course == self.course => {
                self.capacity = Some(e.capacity)
            }
            SchoolEvent::StudentSubscribed(e) => {
                if e.course == self.course {
                    self.course_students += 1;
                }
                if e.student == self.student {
                    self.student_courses += 1;
                    self.already |= e.course == self.course;
                }
            }
            _ => {}
        }
    }

    fn decide(&self) -> Result<Vec<SchoolEvent>, SchoolError> {
        let Some(capacity) = self.capacity else {
            return Err(SchoolError::NoSuchCourse(self.course.clone()));
        };
        if self.already {
            return Err(SchoolError::AlreadySubscribed {
                course: self.course.clone(),
                student: self.student.clone(),
            });
        }
        if self.course_students >= capacity {
            return Err(SchoolError::CourseFull {
                course: self.course.clone(),
                capacity,
            });
        }
        if self.student_courses >= STUDENT_COURSES_MAX {
            return Err(SchoolError::TooManyCourses {
                student: self.student.clone(),
            });
        }
        Ok(vec![SchoolEvent::StudentSubscribed(StudentSubscribed {
            course: self.course.clone(),
            student: self.student.clone(),
        })])
    }

    fn stream(&self) -> String {
        format!("subscription-{}", self.course)
    }

    fn tags(event: &SchoolEvent) -> Tags {
        event.tags()
    }
}

/// Changing a course's capacity: it must exist, and not go below its students. Its boundary:
/// the course's events.
#[derive(Clone, Debug)]
pub struct ChangeCapacity {
    /// The course.
    pub course: String,
    /// The new capacity.
    pub capacity: u32,
    defined: bool,
    students: u32,
}

impl ChangeCapacity {
    /// Set `course`'s capacity to `capacity`; refused when the id does not make a tag.
    pub fn new(course: &str, capacity: u32) -> Result<Self, SchoolError> {
        check_id("course", course)?;
        Ok(ChangeCapacity {
            course: course.to_owned(),
            capacity,
            defined: false,
            students: 0,
        })
    }
}

impl Decision for ChangeCapacity {
    type Event = SchoolEvent;
    type Error = SchoolError;

    fn query(&self) -> Query {
        Query::from(
            QueryItem::new(
                types(&[
                    "CourseDefined",
                    "CourseCapacityChanged",
                    "StudentSubscribed",
                ]),
                [course_tag(&self.course)],
            )
            .expect("three types and one tag"),
        )
    }

    fn apply(&mut self, event: &SchoolEvent) {
        match event {
            SchoolEvent::CourseDefined(_) => self.defined = true,
            SchoolEvent::StudentSubscribed(_) => self.students += 1,
            SchoolEvent::CourseCapacityChanged(_) => {}
        }
    }

    fn decide(&self) -> Result<Vec<SchoolEvent>, SchoolError> {
        if !self.defined {
            return Err(SchoolError::NoSuchCourse(self.course.clone()));
        }
        if self.capacity < self.students {
            return Err(SchoolError::CourseFull {
                course: self.course.clone(),
                capacity: self.capacity,
            });
        }
        Ok(vec![SchoolEvent::CourseCapacityChanged(
            CourseCapacityChanged {
                course: self.course.clone(),
                capacity: self.capacity,
            },
        )])
    }

    fn stream(&self) -> String {
        format!("course-{}", self.course)
    }

    fn tags(event: &SchoolEvent) -> Tags {
        event.tags()
    }
}

/// The service a program calls: the three decisions on a [`Decider`].
#[derive(Clone, Debug)]
pub struct School {
    decider: Decider,
}

impl School {
    /// A school on `store`; a decision that keeps losing races is tried up to 10 times.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        School {
            decider: Decider::new(store).with_max_attempts(10),
        }
    }

    /// The decider (for the two-step `decide` then `append`).
    pub fn decider(&self) -> &Decider {
        &self.decider
    }

    /// Defines a course.
    pub async fn define_course(
        &self,
        course: &str,
        capacity: u32,
        ctx: &Context,
    ) -> Result<Decided<DefineCourse>, DecisionError<SchoolError>> {
        let d = DefineCourse::new(course, capacity).map_err(DecisionError::Rejected)?;
        self.decider.execute(d, ctx).await
    }

    /// Changes a course's capacity.
    pub async fn change_capacity(
        &self,
        course: &str,
        capacity: u32,
        ctx: &Context,
    ) -> Result<Decided<ChangeCapacity>, DecisionError<SchoolError>> {
        let d = ChangeCapacity::new(course, capacity).map_err(DecisionError::Rejected)?;
        self.decider.execute(d, ctx).await
    }

    /// Subscribes a student to a course.
    pub async fn subscribe(
        &self,
        course: &str,
        student: &str,
        ctx: &Context,
    ) -> Result<Decided<Subscribe>, DecisionError<SchoolError>> {
        let d = Subscribe::new(course, student).map_err(DecisionError::Rejected)?;
        self.decider.execute(d, ctx).await
    }
}
