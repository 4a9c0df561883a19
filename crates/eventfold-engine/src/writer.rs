//! The one writer: drains the bounded append queue in groups, checks each request against the
//! stream heads, encodes the group and writes it with one `write`; the *committer* then flushes
//! every group written since its last flush with one `fdatasync`, publishes them to the
//! indexes, wakes subscribers and answers every waiter. Both run on their own OS threads
//! because `write` and `fdatasync` block.
//!
//! The writer never waits for a flush: while the committer flushes, the writer checks, encodes
//! and writes what arrives and queues it (up to as many groups as the append queue holds
//! requests: `EngineOptions::append_queue_depth`), and the committer's next flush takes all of
//! it. An append arriving during a flush is so answered after at most the rest of that flush
//! and one more, not two more (as when the writer handed one group at a time over and waited
//! for the flush before). The writer checks a group against the heads the groups before it
//! left (kept in `heads` until their group is published), never has more than
//! [`UNSYNCED_BYTES_MAX`] bytes written and not yet flushed, and waits for the committer to
//! drain before it seals a segment, so a sealed segment is whole on disk before the next one
//! takes a byte. Answers leave in queue order, each only after its group's flush.
//!
//! When a group holds one request, the committer is idle (it has committed every group handed
//! to it) and no request waits once the group is written, the writer flushes, publishes and
//! answers that group itself, as the committer would (`EngineOptions::inline_commit`, on by
//! default): there is nothing to write during that flush, and handing the group over would only
//! add a thread wake-up to the append. A request arriving meanwhile waits for the rest of that
//! flush, then is written and flushed. A group of several requests means they arrived while
//! the writer was busy: there the pipeline pays, and the group goes to the committer (with
//! many callers each awaiting its answer, committing such groups on the writer merged the two
//! halves of the callers the pipeline alternates into one, and 64 writers appended 30% less).
//! The committer's thread and the writer never commit at once: the writer commits only a group
//! whose predecessors the committer has all published, and the committer only what is handed
//! to it.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;

use eventfold_core::{
    AppendResult, DeleteMode, EventId, ExpectedRevision, IdVerdict, LastAppend, NewEvent, Position,
    Query, Revision, SeenIds, StoreError, StoreResult, StreamHead, StreamMetadata, StreamName,
    Timestamp,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::condition::Recent;
use crate::format::{
    self, FLAG_TX_END, Kind, NO_REVISION, RecordOut, SEGMENT_HEADER_BYTES, UNSYNCED_BYTES_MAX,
};
use crate::index::{LastBatch, Summary};
use crate::indexer::{IndexJob, Indexer};
use crate::io::FileIo;
use crate::keytable::{self, EventKeys, NS_TYPE};
use crate::options::{Durability, EngineOptions};
use crate::segindex::SegIndex;
use crate::segment::{self, prealloc_file_name, segment_file_name};
use crate::shared::Shared;

/// A change for the writer.
#[derive(Debug)]
pub enum Op {
    Append {
        stream: StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        /// An import (`EventStore::append_imported`): the revision the batch must land at and
        /// each event's timestamp (microseconds), instead of the clock's.
        import: Option<(u64, Vec<i64>)>,
        /// A conditional append's condition, as far as the writer must check it.
        condition: Option<Condition>,
    },
    SetMetadata {
        stream: StreamName,
        metadata: StreamMetadata,
    },
    Delete {
        stream: StreamName,
        expected: ExpectedRevision,
        mode: DeleteMode,
    },
}

/// The part of an append's condition the writer checks: no event matching `query` at or
/// after `first` (the events before it were checked against the log by the caller).
#[derive(Debug)]
pub struct Condition {
    pub query: Query,
    pub first: u64,
    /// The condition's `after` as the caller gave it, for the error.
    pub after: Option<Position>,
}

/// What the writer answers.
#[derive(Debug)]
pub enum Reply {
    Appended(AppendResult),
    Done,
    /// A conditional append the writer cannot decide from its recent events (its condition's
    /// `first` is older than they are): nothing was written; the caller checks the log from
    /// `first` and asks again. The events come back.
    CheckLogFirst(Vec<NewEvent>),
}

/// One queued change and where to answer.
#[derive(Debug)]
pub struct Request {
    pub op: Op,
    /// Upper bound of the bytes it takes in the log.
    pub encoded_bytes: usize,
    pub reply: oneshot::Sender<StoreResult<Reply>>,
}

/// Where the writer starts after recovery.
#[derive(Debug)]
pub struct WriterStart {
    pub active_no: u32,
    pub active: Arc<File>,
    /// Whether the active segment's records may carry tags (format version 3).
    pub active_tags: bool,
    pub offset: u64,
    pub segindex: SegIndex,
}

/// The head of a stream as this group sees it: committed state plus the group's staged changes.
#[derive(Debug, Clone)]
struct Head {
    stream: StreamHead,
    last_batch: Option<LastBatch>,
    /// Ids of `last_batch` when it was staged in this group.
    staged_ids: Option<Vec<[u8; 16]>>,
}

/// A record written in this group, waiting for the flush before it is published.
#[derive(Debug)]
struct Staged {
    kind: Kind,
    flags: u8,
    stream: Arc<str>,
    event_type: Arc<str>,
    position: u64,
    revision: u64,
    addr: u64,
    end_offset: u64,
    id: [u8; 16],
    metadata: Option<StreamMetadata>,
}

/// A group the writer wrote, for the committer to flush, publish and answer.
struct Written {
    /// The file the group's bytes went to; `None` when it wrote none (refusals, replays).
    file: Option<Arc<File>>,
    /// Its segment number, for the poison message.
    segment_no: u32,
    staged: Vec<Staged>,
    answers: Vec<Answer>,
    /// Where the log ends after the group.
    end_addr: u64,
    /// The group's number, counting from the writer's start.
    seq: u64,
    /// Bytes written by the end of this group, counting from the writer's start.
    bytes_total: u64,
}

/// How far the committer is, for the writer.
#[derive(Default)]
struct Progress {
    /// The number of the last group published (or refused).
    published: AtomicU64,
    /// The writer's `bytes_total` up to which everything is written and flushed.
    synced: AtomicU64,
}

/// What the writer hands the committer, in order.
enum ToCommitter {
    Group(Written),
    /// Answered once every group handed over before it is committed.
    Barrier(std_mpsc::SyncSender<()>),
}

enum Job {
    Prealloc {
        no: u32,
        done: std_mpsc::SyncSender<std::io::Result<()>>,
    },
    WriteIndex(SegIndex),
}

pub struct Writer {
    shared: Arc<Shared>,
    opts: EngineOptions,
    dir: PathBuf,
    active_no: u32,
    active: Arc<File>,
    /// Whether the active segment's records may carry tags: a tagged event is written only
    /// into such a segment (the writer rolls over a version 1 segment first).
    active_tags: bool,
    offset: u64,
    /// The events sequenced last, for conditional appends (see `condition`).
    recent: Recent,
    /// The active segment's checkpoint, filled by the committer as it publishes.
    segindex: Arc<parking_lot::Mutex<SegIndex>>,
    prealloc: Option<std_mpsc::Receiver<std::io::Result<()>>>,
    jobs: std_mpsc::SyncSender<Job>,
    housekeeper: Option<std::thread::JoinHandle<()>>,
    indexer: Option<Indexer>,
    last_ts: i64,
    /// The timestamp of the last event record in the log: an import may not go below it.
    last_event_ts: i64,
    buf: Vec<u8>,
    carry: Option<Request>,
    /// The position the next record gets (the index's lags behind while a group is in flight).
    next_position: u64,
    /// Heads changed by groups not yet published (the one being staged and those handed to the
    /// committer), each with the number of the last group that changed it: they are ahead of
    /// the index until that group is published.
    heads: HashMap<Arc<str>, (Head, u64)>,
    /// The streams the group being staged changed, and those each unpublished group changed
    /// (oldest first): their heads are forgotten once their group is published.
    changed: Vec<Arc<str>>,
    changed_by: VecDeque<(u64, Vec<Arc<str>>)>,
    /// The number of the group being staged.
    seq: u64,
    /// Bytes written since the writer started.
    bytes_total: u64,
    progress: Arc<Progress>,
    to_committer: Option<std_mpsc::SyncSender<ToCommitter>>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// The committer's work, which the writer does itself for a group of one request when the
    /// committer is idle and no request waits (`EngineOptions::inline_commit`).
    commit_here: Arc<Committer>,
    /// The batch the writer commits itself: one group, its vector kept for its capacity.
    inline_batch: Vec<Written>,
    /// The append queue.
    queue: mpsc::Receiver<Request>,
    /// Emptied vectors of committed groups, back for their capacity (bounded by the largest
    /// group, itself bounded by `group_commit_bytes_max`): a group of thousands of records
    /// does not grow fresh vectors, page-faulting their memory in, every time.
    recycled: std_mpsc::Receiver<(Vec<Staged>, Vec<Answer>)>,
    /// The idempotency window: the ids of the appends among the log's newest positions,
    /// recorded as they are staged (so a retry queued behind its original, in the same group
    /// or the next, is judged against it before it is durable; its answer leaves after the
    /// original's flush, as every answer of a later group does).
    seen: SeenIds,
}

/// The committer: flushes the groups written, publishes them and answers their waiters.
struct Committer {
    shared: Arc<Shared>,
    io: Arc<dyn FileIo>,
    sync: bool,
    dir: PathBuf,
    segindex: Arc<parking_lot::Mutex<SegIndex>>,
    commit: watch::Sender<u64>,
    progress: Arc<Progress>,
    recycle: std_mpsc::SyncSender<(Vec<Staged>, Vec<Answer>)>,
}

/// Where to answer a request of the group, and what.
type Answer = (oneshot::Sender<StoreResult<Reply>>, StoreResult<Reply>);

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("active_no", &self.active_no)
            .field("offset", &self.offset)
            .finish()
    }
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        opts: EngineOptions,
        start: WriterStart,
        commit: watch::Sender<u64>,
        queue: mpsc::Receiver<Request>,
    ) -> Self {
        let dir = shared.dir.clone();
        let shared_for_indexer = shared.clone();
        let (jobs, rx) = std_mpsc::sync_channel::<Job>(4);
        let hk_dir = dir.clone();
        let segment_bytes = opts.segment_bytes;
        let sync = opts.durability == Durability::Fsync;
        let hk_io = opts.io.clone();
        let hk_shared = shared.clone();
        let housekeeper = crate::background::spawn("eventfold-housekeeper", move || {
                for job in rx {
                    match job {
                        Job::Prealloc { no, done } => {
                            let r = segment::preallocate(&*hk_io, &hk_dir, no, segment_bytes, sync).map(|_| ());
                            let _ = done.send(r);
                        }
                        Job::WriteIndex(ix) => {
                            // A scavenge that rewrote the segment meanwhile wrote the new file's
                            // checkpoint: this one describes the old file.
                            let _m = hk_shared.maintenance.lock();
                            if crate::scavenge::is_compacted(&hk_shared, ix.segment_no) {
                                continue;
                            }
                            if let Err(e) = ix.write(&*hk_io, &hk_dir, sync) {
                                tracing::warn!(segment = ix.segment_no, error = %e, "could not write the index checkpoint; it will be rebuilt from the segment on the next open");
                            }
                        }
                    }
                }
            })
            .ok();
        let segindex = Arc::new(parking_lot::Mutex::new(start.segindex));
        let (recycle, recycled) = std_mpsc::sync_channel(4);
        // Groups the writer may have handed to the committer and not yet seen taken: as many
        // as the append queue holds requests, so that while a flush stalls (a disk that takes
        // tens of milliseconds over one `fdatasync` now and then) every request queued meanwhile
        // is written and the next flush takes it. With 64, a stall at 5,000 single appends/s
        // filled the queue in 13 ms, and the appends after it waited for a second slow flush
        // besides (`BENCHMARKS.md`, "Issue 12, 2026-12-07 (eleventh session)"). Their bytes are
        // bounded by [`UNSYNCED_BYTES_MAX`] whatever their number.
        let (to_committer, from_writer) = std_mpsc::sync_channel(opts.append_queue_depth.max(1));
        let progress = Arc::new(Progress::default());
        let committer = Arc::new(Committer {
            shared: shared.clone(),
            io: opts.io.clone(),
            sync,
            dir: dir.clone(),
            segindex: segindex.clone(),
            commit,
            progress: progress.clone(),
            recycle,
        });
        let commit_here = committer.clone();
        let committer = std::thread::Builder::new()
            .name("eventfold-committer".into())
            .spawn(move || committer.run(from_writer))
            .ok();
        let next_position = shared.index.read().next_position;
        let last_event_ts = last_event_timestamp(&shared).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the last event's timestamp; imports are checked against the clock's order from now on");
            i64::MIN
        });
        let (seen, read) =
            crate::seen::rebuild(&shared, opts.idempotency, Timestamp::now().micros());
        if let Err(e) = read {
            tracing::error!(error = %e, ids = seen.len(), "could not read the idempotency window back from the log's tail: retries of the appends before the failure are recognized only as a stream's last batch");
        }
        publish_seen_stats(&shared, &seen);
        let mut w = Writer {
            shared,
            opts,
            dir,
            active_no: start.active_no,
            active: start.active,
            active_tags: start.active_tags,
            offset: start.offset,
            recent: Recent::new(next_position),
            segindex,
            prealloc: None,
            jobs,
            housekeeper,
            indexer: Some(Indexer::start(shared_for_indexer, sync)),
            last_ts: last_event_ts.max(0),
            last_event_ts,
            buf: Vec::with_capacity(1 << 20),
            carry: None,
            next_position,
            heads: HashMap::new(),
            changed: Vec::new(),
            changed_by: VecDeque::new(),
            seq: 1,
            bytes_total: 0,
            progress,
            // Without its thread every hand-over fails and the writer poisons the store.
            to_committer: committer.is_some().then_some(to_committer),
            committer,
            commit_here,
            inline_batch: Vec::with_capacity(1),
            queue,
            recycled,
            seen,
        };
        w.start_prealloc();
        w
    }

    fn start_prealloc(&mut self) {
        let (done, rx) = std_mpsc::sync_channel(1);
        if self
            .jobs
            .send(Job::Prealloc {
                no: self.active_no + 1,
                done,
            })
            .is_ok()
        {
            self.prealloc = Some(rx);
        }
    }

    fn sync(&self) -> bool {
        self.opts.durability == Durability::Fsync
    }

    /// Runs until every sender is gone, then seals nothing (the active segment stays active).
    pub fn run(mut self) {
        loop {
            let first = match self.carry.take() {
                Some(r) => r,
                None => match self.queue.blocking_recv() {
                    Some(r) => r,
                    None => break,
                },
            };
            let mut group = vec![first];
            let mut bytes = group[0].encoded_bytes;
            while let Ok(r) = self.queue.try_recv() {
                if bytes + r.encoded_bytes > self.opts.group_commit_bytes_max {
                    self.carry = Some(r);
                    break;
                }
                bytes += r.encoded_bytes;
                group.push(r);
            }
            self.process(group);
        }
        // Queue closed: the engine is shutting down. The committer finishes the group it holds,
        // then the housekeeper its last job.
        let Writer {
            jobs,
            housekeeper,
            indexer,
            to_committer,
            committer,
            ..
        } = self;
        drop(to_committer);
        if let Some(h) = committer {
            let _ = h.join();
        }
        drop(jobs);
        if let Some(h) = housekeeper {
            let _ = h.join();
        }
        if let Some(ix) = indexer {
            ix.stop();
        }
    }

    fn process(&mut self, group: Vec<Request>) {
        let poisoned = self.shared.poisoned.lock().clone();
        if let Some(cause) = poisoned {
            for r in group {
                let _ = r.reply.send(Err(StoreError::Poisoned {
                    cause: cause.clone(),
                }));
            }
            return;
        }
        let now = Timestamp::now().micros().max(self.last_ts);
        self.last_ts = now;
        self.forget_published();
        let (mut staged, mut answers) = self.recycled.try_recv().unwrap_or_default();
        debug_assert!(staged.is_empty() && answers.is_empty());
        answers.reserve(group.len());
        let mut next_position = self.next_position;
        self.buf.clear();
        let mut buf_start = self.offset;

        let mut requests = group.into_iter();
        while let Some(req) = requests.next() {
            let stream = op_stream(&req.op).clone();
            let key = stream.as_arc().clone();
            let head = match self.heads.get(&key) {
                Some((h, _)) => h.clone(),
                None => self.head_of(&stream),
            };
            // Is this request a replay or refused? Decide before writing anything.
            let verdict = self.check(&req.op, &stream, &head, now, next_position);
            let outcome = match verdict {
                Err(e) => Err(e),
                Ok(Some(Reply::CheckLogFirst(_))) => Ok(Reply::CheckLogFirst(match req.op {
                    Op::Append { events, .. } => events,
                    _ => Vec::new(),
                })),
                Ok(Some(reply)) => Ok(reply),
                Ok(None) => {
                    // Make room: a transaction never spans segments; and a tagged event goes
                    // only into a segment whose version allows tags.
                    if buf_start + (self.buf.len() + req.encoded_bytes) as u64
                        > self.opts.segment_bytes
                        || (!self.active_tags && has_tags(&req.op))
                    {
                        // Everything staged so far goes to the segment being sealed: write it
                        // and let the committer flush, publish and answer it (and everything
                        // before it) before the new segment takes any byte.
                        self.next_position = next_position;
                        let handed = self
                            .hand_over(buf_start, &mut staged, &mut answers)
                            .map_err(RollError::Io);
                        let rolled = handed.and_then(|()| {
                            self.drain();
                            self.roll()
                        });
                        if let Err(RollError::NoRoom(e)) = rolled {
                            // The disk is full. Everything before this request is committed
                            // and nothing of it (or of the rest of the group) was written: refuse
                            // them without poisoning; the next append that needs a new segment
                            // tries again, so writes resume once there is room.
                            let cause = StoreError::StorageFull {
                                context: format!(
                                    "prepare the next segment file {}: {e}",
                                    self.dir
                                        .join(segment_file_name(self.active_no + 1))
                                        .display()
                                ),
                            };
                            tracing::warn!(error = %cause, "append refused: the disk is full");
                            let _ = req.reply.send(Err(cause.clone()));
                            for r in requests {
                                let _ = r.reply.send(Err(cause.clone()));
                            }
                            return;
                        }
                        if let Err(RollError::Io(e)) = rolled {
                            self.poison(e, &mut answers, Some(req.reply));
                            // The rest of the group is refused with the cause too (dropping
                            // them would answer `Closed`).
                            self.process(requests.collect());
                            return;
                        }
                        buf_start = self.offset;
                    }
                    let mut h = head;
                    let r = self.stage(
                        req.op,
                        &stream,
                        &mut h,
                        &mut next_position,
                        now,
                        buf_start,
                        &mut staged,
                    );
                    let before = self.heads.insert(key.clone(), (h, self.seq));
                    if before.is_none_or(|(_, seq)| seq != self.seq) {
                        self.changed.push(key);
                    }
                    Ok(r)
                }
            };
            answers.push((req.reply, outcome));
        }
        self.next_position = next_position;
        publish_seen_stats(&self.shared, &self.seen);
        if let Err(e) = self.hand_over(buf_start, &mut staged, &mut answers) {
            self.poison(e, &mut answers, None);
        }
    }

    /// Writes the group buffer at `buf_start` of the active segment and hands the group to the
    /// committer, which flushes, publishes and answers it (or, for a group of one request when
    /// the committer is idle and no request waits, does that itself: see the module doc);
    /// waits only while `append_queue_depth` groups are queued, or for the committer to drain
    /// when the group would not fit in the unsynced window. On an error nothing was handed
    /// over: `staged` and `answers` are still the caller's, and every earlier group is
    /// committed.
    fn hand_over(
        &mut self,
        buf_start: u64,
        staged: &mut Vec<Staged>,
        answers: &mut Vec<Answer>,
    ) -> std::io::Result<()> {
        let bytes = self.buf.len() as u64;
        let lone = answers.len() <= 1;
        if bytes > 0 {
            // Recovery relies on the unsynced window: with the groups written and not yet
            // flushed, this one must fit in it, or it waits for them first.
            let unsynced = self.bytes_total - self.progress.synced.load(Ordering::Acquire);
            if unsynced + bytes > UNSYNCED_BYTES_MAX {
                self.drain();
            }
            // A group reaching past the page it starts in is written to the end of the page
            // it ends in (zeros over the segment's zeros): the segment's zeros were written
            // past the page cache (`io::write_zeros_direct`), and a write to part of a page
            // not in memory first reads the page from the disk, while a write of a whole page
            // does not. The page it starts in was written by the group before it (or holds
            // the segment's header), so it is in memory. The records after it overwrite the
            // zeros; recovery reads zeros after the last record either way.
            let end = buf_start + bytes;
            let page = page_bytes();
            let pad = if (end - 1) / page > buf_start / page {
                end.next_multiple_of(page)
                    .min(self.opts.segment_bytes.max(end))
                    - end
            } else {
                0
            };
            self.buf.resize((bytes + pad) as usize, 0);
            if let Err(e) = self
                .opts
                .io
                .write_all_at(&self.active, &self.buf, buf_start)
            {
                self.buf.truncate(bytes as usize);
                self.drain();
                return Err(e);
            }
            self.offset = buf_start + bytes;
            self.bytes_total += bytes;
            self.buf.clear();
        }
        let group = Written {
            file: (bytes > 0).then(|| self.active.clone()),
            segment_no: self.active_no,
            staged: std::mem::take(staged),
            answers: std::mem::take(answers),
            end_addr: format::addr(self.active_no, self.offset),
            seq: self.seq,
            bytes_total: self.bytes_total,
        };
        if self.opts.inline_commit
            && lone
            && self.carry.is_none()
            && self.queue.is_empty()
            && self.progress.published.load(Ordering::Acquire) + 1 == self.seq
        {
            // A lone request, the committer has committed every group handed to it and nothing
            // waits to be written: handing this group over would only wake the committer to
            // flush while this thread sleeps. Commit it here instead, as the committer would.
            let mut batch = std::mem::take(&mut self.inline_batch);
            batch.push(group);
            self.commit_here.commit(&mut batch);
            self.inline_batch = batch;
        } else {
            self.send_to_committer(group, staged, answers)?;
        }
        self.changed_by
            .push_back((self.seq, std::mem::take(&mut self.changed)));
        self.seq += 1;
        Ok(())
    }

    /// Hands a written group to the committer thread. On an error its `staged` and `answers`
    /// go back to the caller's.
    fn send_to_committer(
        &mut self,
        group: Written,
        staged: &mut Vec<Staged>,
        answers: &mut Vec<Answer>,
    ) -> std::io::Result<()> {
        let sent = self
            .to_committer
            .as_ref()
            .map(|tx| tx.send(ToCommitter::Group(group)));
        match sent {
            Some(Ok(())) => {}
            Some(Err(std_mpsc::SendError(msg))) => {
                if let ToCommitter::Group(g) = msg {
                    *staged = g.staged;
                    *answers = g.answers;
                }
                return Err(std::io::Error::other("the committer thread stopped"));
            }
            None => return Err(std::io::Error::other("the committer thread did not start")),
        }
        Ok(())
    }

    /// Forgets the heads of the groups the committer has published: the index has them now.
    fn forget_published(&mut self) {
        let published = self.progress.published.load(Ordering::Acquire);
        while let Some((seq, _)) = self.changed_by.front()
            && *seq <= published
        {
            let Some((seq, streams)) = self.changed_by.pop_front() else {
                break;
            };
            for s in streams {
                if self.heads.get(&s).is_some_and(|(_, last)| *last == seq) {
                    self.heads.remove(&s);
                }
            }
        }
    }

    /// Waits until the committer has committed every group handed over.
    fn drain(&mut self) {
        let (done, wait) = std_mpsc::sync_channel(1);
        if let Some(tx) = &self.to_committer
            && tx.send(ToCommitter::Barrier(done)).is_ok()
        {
            let _ = wait.recv();
        }
        // Every group handed over is published: the heads they changed are in the index (the
        // group being staged, if any, keeps its own).
        self.forget_published();
    }

    fn head_of(&self, stream: &StreamName) -> Head {
        let index = self.shared.index.read();
        match index.stream(stream.as_str()) {
            Some(st) => Head {
                stream: st.head(),
                last_batch: st.last_batch,
                staged_ids: None,
            },
            None => Head {
                stream: StreamHead::default(),
                last_batch: None,
                staged_ids: None,
            },
        }
    }

    /// `Ok(Some(Reply::Appended(result)))` for an idempotent replay, `Ok(Some(CheckLogFirst))`
    /// for a condition to check against the log first, `Ok(None)` to write, `Err` to refuse.
    fn check(
        &mut self,
        op: &Op,
        stream: &StreamName,
        head: &Head,
        now: i64,
        next_position: u64,
    ) -> StoreResult<Option<Reply>> {
        match op {
            Op::Append {
                expected,
                events,
                import,
                condition,
                ..
            } => {
                let lb = head.last_batch;
                let ids = self.seen.judge(
                    stream.as_str(),
                    events.iter().map(|e| e.id),
                    next_position,
                    now,
                );
                // Before the import's verdict hides it: whether none of the ids is in the window.
                let unseen = matches!(ids, IdVerdict::New);
                let ids = if import.is_some() {
                    ids.for_import()
                } else {
                    ids
                };
                let verdict = head.stream.check_append_ids(
                    stream,
                    ids,
                    lb.map(|b| b.append()),
                    *expected,
                    events.len(),
                    |_| {
                        let lb = lb.expect("the ids are compared only when there is a last batch");
                        // None of the ids is in the window, and the window holds the stream's
                        // last batch with all its ids: the append cannot repeat that batch.
                        let in_window = || {
                            unseen
                                && self.seen.holds_append(
                                    stream.as_str(),
                                    lb.first_position,
                                    next_position,
                                    now,
                                )
                        };
                        self.same_ids(stream, head, &lb, events, in_window)
                    },
                )?;
                if let (None, Some((first_revision, timestamps))) = (&verdict, import) {
                    head.stream.check_import(
                        stream,
                        Revision(*first_revision),
                        timestamps.iter().copied(),
                        self.last_event_ts,
                        now,
                    )?;
                }
                if let (None, Some(c)) = (&verdict, condition) {
                    return self.check_condition(stream, c);
                }
                Ok(verdict.map(Reply::Appended))
            }
            Op::SetMetadata { .. } => head.stream.check_writable(stream).map(|()| None),
            Op::Delete { expected, mode, .. } => head
                .stream
                .check_delete(stream, *expected, *mode)
                .map(|()| None),
        }
    }

    /// A condition, against the events this writer sequenced (published, written, or staged
    /// in this group): `Err` when one matches, `Ok(Some(CheckLogFirst))` when it reaches
    /// back before the recent events, `Ok(None)` when none matches.
    fn check_condition(&self, stream: &StreamName, c: &Condition) -> StoreResult<Option<Reply>> {
        if !self.shared.last_seen.may_match(&c.query, c.first) {
            return Ok(None);
        }
        if !self.recent.covers(c.first) {
            return Ok(Some(Reply::CheckLogFirst(Vec::new())));
        }
        match self.recent.first_match(&c.query, c.first) {
            Some(position) => Err(StoreError::AppendConditionFailed {
                stream: stream.clone(),
                after: c.after,
                position,
            }),
            None => Ok(None),
        }
    }

    /// Whether `events` repeat the stream's last batch `lb`, the cheapest way that tells: the
    /// ids staged in this group, the batch's first id (known unless it was loaded from a version
    /// 1 checkpoint or snapshot), `in_window` (the idempotency window holds the batch and none
    /// of the events' ids: a binary search of the window), and last the batch's records in the
    /// log (a disk read on a big store).
    fn same_ids(
        &self,
        stream: &StreamName,
        head: &Head,
        lb: &LastBatch,
        events: &[NewEvent],
        in_window: impl FnOnce() -> bool,
    ) -> StoreResult<bool> {
        if let Some(ids) = &head.staged_ids {
            return Ok(ids.iter().zip(events).all(|(a, e)| a == e.id.as_bytes()));
        }
        if let Some(first) = lb.first_id
            && first != *events[0].id.as_bytes()
        {
            return Ok(false);
        }
        if in_window() {
            return Ok(false);
        }
        let range = lb.first_revision..lb.first_revision + lb.len;
        let mut ids = Vec::with_capacity(events.len());
        let mut buf = Vec::new();
        let _gate = self.shared.gate.read();
        for a in self.shared.addrs_of(stream, range.clone())? {
            let r = self.shared.segments.read_record(a, &mut buf)?;
            // Hash collisions may list records of other streams.
            if r.kind == Kind::Event && r.stream == stream.as_str() && range.contains(&r.revision) {
                ids.push(r.id);
            }
        }
        Ok(ids.len() == events.len() && ids.iter().zip(events).all(|(a, e)| a == e.id.as_bytes()))
    }

    /// Encodes the op's records into the group buffer and updates the head.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &mut self,
        op: Op,
        stream: &StreamName,
        head: &mut Head,
        next_position: &mut u64,
        now: i64,
        buf_start: u64,
        staged: &mut Vec<Staged>,
    ) -> Reply {
        let name = stream.as_arc().clone();
        let staged_from = staged.len();
        let mut tags_of = Vec::new();
        let mut tags_buf = Vec::new();
        // The events of a batch mostly share their type: one shared string per run of equal
        // types, not one allocation per event.
        let mut last_type: Option<Arc<str>> = None;
        let mut push = |w: &mut Writer, rec: RecordOut<'_>, metadata: Option<StreamMetadata>| {
            let offset = buf_start + w.buf.len() as u64;
            rec.encode_into(&mut w.buf);
            let event_type = match &last_type {
                Some(t) if **t == *rec.event_type => t.clone(),
                _ => last_type.insert(Arc::from(rec.event_type)).clone(),
            };
            staged.push(Staged {
                kind: rec.kind,
                flags: rec.flags,
                stream: name.clone(),
                event_type,
                position: rec.position,
                revision: rec.revision,
                addr: format::addr(w.active_no, offset),
                end_offset: buf_start + w.buf.len() as u64,
                id: rec.id,
                metadata,
            });
        };
        fn system<'a>(
            kind: Kind,
            stream: &'a str,
            position: u64,
            revision: u64,
            now: i64,
            data: &'a [u8],
        ) -> RecordOut<'a> {
            RecordOut {
                kind,
                flags: FLAG_TX_END,
                stream,
                event_type: kind.system_type(),
                content_type: "application/json",
                position,
                revision,
                timestamp_us: now,
                id: *EventId::new_v7().as_bytes(),
                schema_version: 1,
                metadata: b"",
                data,
                tags: b"",
            }
        }
        let reply = match op {
            Op::Append { events, import, .. } => {
                let timestamps = import.map(|(_, t)| t);
                let first_revision = head.stream.next_revision;
                let first_position = *next_position;
                let n = events.len();
                let mut ids = Vec::with_capacity(n);
                for (i, e) in events.iter().enumerate() {
                    // An import's timestamps were checked: not decreasing, not below the last
                    // event's, not above `now`; so every event's is at least the one before.
                    let timestamp_us = timestamps.as_ref().map_or(now, |t| t[i]);
                    self.last_event_ts = timestamp_us;
                    let metadata = if e.metadata.is_empty() {
                        Vec::new()
                    } else {
                        serde_json::to_vec(&e.metadata).expect("a JSON map always serializes")
                    };
                    tags_buf.clear();
                    format::encode_tags(&e.tags, &mut tags_buf);
                    tags_of.push(e.tags.clone());
                    let rec = RecordOut {
                        kind: Kind::Event,
                        flags: if i + 1 == n { FLAG_TX_END } else { 0 },
                        stream: stream.as_str(),
                        event_type: e.event_type.as_str(),
                        content_type: e.content_type.as_str(),
                        position: *next_position,
                        revision: head.stream.next_revision,
                        timestamp_us,
                        id: *e.id.as_bytes(),
                        schema_version: e.schema_version,
                        metadata: &metadata,
                        data: &e.data,
                        tags: &tags_buf,
                    };
                    push(self, rec, None);
                    ids.push(*e.id.as_bytes());
                    *next_position += 1;
                    head.stream.next_revision += 1;
                }
                let last_position = *next_position - 1;
                head.last_batch = Some(LastBatch {
                    first_revision,
                    len: n as u64,
                    first_position,
                    last_position,
                    first_id: ids.first().copied(),
                });
                self.seen.record(
                    &name,
                    events.iter().map(|e| e.id),
                    LastAppend {
                        first_revision,
                        len: n as u64,
                        first_position,
                        last_position,
                    },
                    timestamps.as_ref().map_or(now, |t| t[0]),
                    *next_position,
                    now,
                );
                head.staged_ids = Some(ids);
                Reply::Appended(AppendResult {
                    stream: stream.clone(),
                    first_revision: Revision(first_revision),
                    last_revision: Revision(head.stream.next_revision - 1),
                    first_position: Position(first_position),
                    last_position: Position(last_position),
                    idempotent_replay: false,
                })
            }
            Op::SetMetadata { metadata, .. } => {
                let data =
                    serde_json::to_vec(&metadata).expect("stream metadata always serializes");
                let last = head
                    .stream
                    .next_revision
                    .checked_sub(1)
                    .unwrap_or(NO_REVISION);
                push(
                    self,
                    system(
                        Kind::Metadata,
                        stream.as_str(),
                        *next_position,
                        last,
                        now,
                        &data,
                    ),
                    Some(metadata),
                );
                *next_position += 1;
                Reply::Done
            }
            Op::Delete { mode, .. } => {
                let last = head
                    .stream
                    .next_revision
                    .checked_sub(1)
                    .unwrap_or(NO_REVISION);
                let kind = match mode {
                    DeleteMode::Soft => {
                        head.stream.deleted_before = head.stream.next_revision;
                        Kind::SoftDelete
                    }
                    DeleteMode::Hard => {
                        head.stream.tombstoned = true;
                        Kind::Tombstone
                    }
                };
                push(
                    self,
                    system(kind, stream.as_str(), *next_position, last, now, b""),
                    None,
                );
                *next_position += 1;
                Reply::Done
            }
        };
        // The events are sequenced: conditional appends after this one see them.
        if !tags_of.is_empty() {
            let events = staged[staged_from..]
                .iter()
                .filter(|s| s.kind == Kind::Event);
            for (s, tags) in events.zip(tags_of) {
                self.shared.last_seen.note(s.position, &s.event_type, &tags);
                self.recent.push(s.position, s.event_type.clone(), tags);
            }
            let published = *self.shared.committed.borrow();
            self.recent.trim(published, &self.shared.last_seen);
        }
        reply
    }

    /// Seals the active segment and makes the preallocated next one active. A full disk while
    /// preparing the next segment changes nothing ([`RollError::NoRoom`]): the active segment
    /// stays, and the next roll tries again.
    fn roll(&mut self) -> Result<(), RollError> {
        let next = self.active_no + 1;
        let ready = self.prealloc.take().map(|rx| {
            rx.recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("housekeeper stopped")))
        });
        let prealloc = self.dir.join(prealloc_file_name(next));
        if !matches!(ready, Some(Ok(()))) {
            let made = segment::preallocate(
                &*self.opts.io,
                &self.dir,
                next,
                self.opts.segment_bytes,
                self.sync(),
            );
            if let Err(e) = made {
                // Give back the space the unfinished file took (it is not part of the log).
                let _ = self.opts.io.remove_file(&prealloc);
                return Err(if is_disk_full(&e) {
                    RollError::NoRoom(e)
                } else {
                    RollError::Io(e)
                });
            }
        }
        let path = self.dir.join(segment_file_name(next));
        self.opts.io.rename(&prealloc, &path)?;
        if self.sync() {
            self.opts.io.sync_dir(&self.dir)?;
        }
        let file = Arc::new(self.opts.io.open_rw(&path, false, false)?);
        self.shared.segments.insert(next, file.clone());
        let sealed = std::mem::replace(&mut *self.segindex.lock(), SegIndex::new(next));
        let sealed_no = sealed.segment_no;
        let _ = self.jobs.send(Job::WriteIndex(sealed));
        // The index now stands at the end of the sealed segment (everything staged before the
        // roll was published): freeze its memtable and, every so often, snapshot the streams.
        let (mem, snapshot) = {
            let mut index = self.shared.index.write();
            let mem = index.freeze(sealed_no);
            let every = self.opts.snapshot_every_segments.max(1);
            let snapshot = (sealed_no + 1).is_multiple_of(every).then(|| {
                (
                    index.snapshot(sealed_no),
                    self.shared.epoch.load(std::sync::atomic::Ordering::Acquire),
                )
            });
            (mem, snapshot)
        };
        if let Some(ix) = &self.indexer {
            // Blocks while the indexer is `INDEX_JOBS_MAX` jobs behind: back-pressure that
            // bounds the frozen memtables held in memory.
            let _ = ix.jobs.send(IndexJob::Table {
                seg: sealed_no,
                mem,
            });
            if let Some((s, epoch)) = snapshot {
                let _ = ix.jobs.send(IndexJob::Snapshot(s, epoch));
            }
        }
        self.active_no = next;
        self.active = file;
        // The writer writes every new segment in the current version, which allows tags.
        self.active_tags = true;
        self.offset = SEGMENT_HEADER_BYTES;
        self.start_prealloc();
        Ok(())
    }

    /// Stops writes for good after a failed write or roll: answers what the group staged, and
    /// `pending`, with the cause. Every group handed over before was committed (or refused).
    fn poison(
        &mut self,
        e: std::io::Error,
        answers: &mut Vec<Answer>,
        pending: Option<oneshot::Sender<StoreResult<Reply>>>,
    ) {
        let cause = poison_store(
            &self.shared,
            format!(
                "write or flush of segment {} failed: {e}",
                self.dir.join(segment_file_name(self.active_no)).display()
            ),
        );
        refuse(&cause, answers);
        if let Some(tx) = pending {
            let _ = tx.send(Err(StoreError::Poisoned { cause }));
        }
    }
}

/// Why a roll failed.
#[derive(Debug)]
enum RollError {
    /// The disk is full: the next segment could not be prepared, and nothing changed.
    NoRoom(std::io::Error),
    /// Anything else: the store is poisoned.
    Io(std::io::Error),
}

impl From<std::io::Error> for RollError {
    fn from(e: std::io::Error) -> Self {
        RollError::Io(e)
    }
}

/// `ENOSPC` or `EDQUOT`: no room on the disk (or in the user's quota).
fn is_disk_full(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

/// Marks the store poisoned with `cause` (the first cause stays) and returns the cause it has.
fn poison_store(shared: &Shared, cause: String) -> String {
    let mut poisoned = shared.poisoned.lock();
    if poisoned.is_none() {
        tracing::error!(%cause, "storage failure: the store stops accepting writes");
        *poisoned = Some(cause);
    }
    poisoned.clone().unwrap_or_default()
}

/// Answers a group that will not be published: refusals decided before the failure stand;
/// anything that would have been written fails with `cause`.
fn refuse(cause: &str, answers: &mut Vec<Answer>) {
    for (tx, r) in answers.drain(..) {
        let r = match r {
            Ok(_) => Err(StoreError::Poisoned {
                cause: cause.to_owned(),
            }),
            Err(e) => Err(e),
        };
        let _ = tx.send(r);
    }
}

impl Committer {
    fn run(self: Arc<Self>, rx: std_mpsc::Receiver<ToCommitter>) {
        let mut batch = Vec::new();
        while let Ok(first) = rx.recv() {
            // Every group queued now goes into this flush; a barrier ends the batch and is
            // answered once the groups before it are committed.
            let mut barrier = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    ToCommitter::Group(g) => {
                        batch.push(g);
                        next = rx.try_recv().ok();
                    }
                    ToCommitter::Barrier(done) => barrier = Some(done),
                }
            }
            self.commit(&mut batch);
            if let Some(done) = barrier {
                let _ = done.send(());
            }
        }
    }

    /// Flushes the groups' bytes, publishes their records and answers their waiters; after a
    /// failure (this flush, or an earlier one) refuses them instead.
    fn commit(&self, batch: &mut Vec<Written>) {
        if let Err((segment_no, e)) = self.flush(batch) {
            poison_store(
                &self.shared,
                format!(
                    "write or flush of segment {} failed: {e}",
                    self.dir.join(segment_file_name(segment_no)).display()
                ),
            );
        }
        let poisoned = self.shared.poisoned.lock().clone();
        match poisoned {
            Some(cause) => {
                for g in batch.iter_mut() {
                    refuse(&cause, &mut g.answers);
                }
            }
            None => {
                self.publish(batch);
                for g in batch.iter_mut() {
                    for (tx, r) in g.answers.drain(..) {
                        let _ = tx.send(r);
                    }
                }
            }
        }
        if let Some(last) = batch.last() {
            self.progress.published.store(last.seq, Ordering::Release);
        }
        for mut g in batch.drain(..) {
            g.staged.clear();
            let _ = self.recycle.try_send((g.staged, g.answers));
        }
    }

    /// Flushes each file the groups wrote to, once. On a failure, the segment it was.
    fn flush(&self, batch: &[Written]) -> Result<(), (u32, std::io::Error)> {
        if self.sync {
            let mut flushed: Option<&Arc<File>> = None;
            for g in batch {
                if let Some(file) = &g.file
                    && !flushed.is_some_and(|f| Arc::ptr_eq(f, file))
                {
                    self.io.sync_data(file).map_err(|e| (g.segment_no, e))?;
                    flushed = Some(file);
                }
            }
        }
        if let Some(last) = batch.last() {
            self.progress
                .synced
                .store(last.bytes_total, Ordering::Release);
        }
        Ok(())
    }

    /// Makes the flushed groups visible: indexes, watermark, subscribers.
    fn publish(&self, batch: &[Written]) {
        let Some(end_addr) = batch
            .iter()
            .rev()
            .find(|g| !g.staged.is_empty())
            .map(|g| g.end_addr)
        else {
            return;
        };
        let staged = batch.iter().flat_map(|g| g.staged.iter());
        let mut segindex = self.segindex.lock();
        let mut index = self.shared.index.write();
        let bits = index.hash_bits;
        // What the previous record's stream and type resolved to (index id, keys, checkpoint
        // string ids): the records of one append share their stream and mostly their type, so
        // each is looked up and hashed once per run of equal names, not once per record.
        let mut last_stream: Option<(&Arc<str>, u32, EventKeys, u32)> = None;
        let mut last_type: Option<(&Arc<str>, u64, u32)> = None;
        for s in staged {
            let sum = Summary {
                kind: s.kind,
                flags: s.flags,
                stream: &s.stream,
                event_type: &s.event_type,
                position: s.position,
                revision: s.revision,
                addr: s.addr,
                id: Some(s.id),
            };
            let (sid, keys, seg_stream) = match last_stream {
                Some((name, sid, keys, seg)) if same_name(name, &s.stream) => (sid, keys, seg),
                _ => {
                    let v = (
                        index.stream_id_or_insert(&s.stream),
                        EventKeys::of_stream(&s.stream, bits),
                        segindex.intern(&s.stream),
                    );
                    last_stream = Some((&s.stream, v.0, v.1, v.2));
                    v
                }
            };
            if let Err(e) = index.apply(&sum, sid, s.metadata.clone()) {
                // The writer checked every rule the index checks; this is a bug, not bad input.
                tracing::error!(error = %e.0, "the index refused a record the writer staged");
            }
            let mut seg_type = 0;
            if s.kind == Kind::Event {
                let (type_key, seg) = match last_type {
                    Some((name, k, seg)) if same_name(name, &s.event_type) => (k, seg),
                    _ => {
                        let v = (
                            keytable::key(NS_TYPE, &s.event_type, bits),
                            segindex.intern(&s.event_type),
                        );
                        last_type = Some((&s.event_type, v.0, v.1));
                        v
                    }
                };
                seg_type = seg;
                index
                    .memtable
                    .add_event_keys(&keys, type_key, s.revision, s.addr);
            }
            if (s.addr >> 32) as u32 == segindex.segment_no {
                segindex.add_interned(&sum, seg_stream, seg_type, s.end_offset);
            } else {
                // Roll-over publishes everything staged before it, so this is a bug.
                tracing::error!(
                    position = s.position,
                    "staged record belongs to a sealed segment"
                );
            }
        }
        index.end_addr = end_addr;
        let next = index.next_position;
        drop(index);
        drop(segindex);
        self.commit.send_replace(next);
    }
}

/// The size of a page of the page cache.
fn page_bytes() -> u64 {
    rustix::param::page_size() as u64
}

/// Tells [`crate::EngineStats`] how large the idempotency window is.
fn publish_seen_stats(shared: &Shared, seen: &SeenIds) {
    use std::sync::atomic::Ordering::Relaxed;
    shared.seen_ids.store(seen.len() as u64, Relaxed);
    shared.seen_bytes.store(seen.heap_bytes() as u64, Relaxed);
}

/// Whether two staged names are equal: the same shared string (the common case inside a
/// batch), else compared by content.
fn same_name(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// Whether the op writes an event with tags.
fn has_tags(op: &Op) -> bool {
    matches!(op, Op::Append { events, .. } if events.iter().any(|e| !e.tags.is_empty()))
}

fn op_stream(op: &Op) -> &StreamName {
    match op {
        Op::Append { stream, .. } | Op::SetMetadata { stream, .. } | Op::Delete { stream, .. } => {
            stream
        }
    }
}

/// The timestamp of the last event record in the log (`i64::MIN` when it has none), read at
/// open so that an import is checked against it across restarts. Walks back through the
/// sparse map one window (at most 64 records, never across a segment) at a time, scanning each
/// window forward (to the segment's end at most: a segment a scavenge compacted may end before
/// the window's last position), until a window holds an event: one window for any log whose
/// tail is not a long run of metadata changes and deletes.
fn last_event_timestamp(shared: &Shared) -> StoreResult<i64> {
    let (sparse, next_position) = {
        let index = shared.index.read();
        (index.sparse().to_vec(), index.next_position)
    };
    let mut end = next_position;
    for &(start, addr) in sparse.iter().rev() {
        let (no, off) = format::split_addr(addr);
        let Some(file) = shared.segments.file(no) else {
            end = start;
            continue;
        };
        let mut found = None;
        let mut scanner = shared.segments.scanner(file, off, u64::MAX);
        loop {
            let rec = scanner.next_record().map_err(|e| {
                StoreError::io(format!("read {}", shared.segments.path(no).display()), e)
            })?;
            match rec {
                Ok(Some((_, r))) if r.position < end => {
                    if r.kind == Kind::Event {
                        found = Some(r.timestamp_us);
                    }
                }
                Ok(_) => break,
                Err(e) => return Err(shared.segments.corrupt(no, scanner.offset, e.to_string())),
            }
        }
        if let Some(ts) = found {
            return Ok(ts);
        }
        end = start;
    }
    Ok(i64::MIN)
}
