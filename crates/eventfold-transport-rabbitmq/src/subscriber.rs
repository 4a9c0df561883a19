//! One consumer of a group: a channel of its own (in confirm mode, for the copies retries and
//! dead letters make), `basic.qos(prefetch)` and a `basic.consume` with manual acks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventfold_transport::{
    Incoming, RETRY_DELAY_MAX, SubscribeSettings, Subscriber, Token, TransportError,
    TransportResult,
};
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Consumer};
use tokio::time::Instant;

use crate::convert::{self, H_ATTEMPTS, H_DEAD_REASON, short, unavailable};
use crate::{BROKER, GroupNames, Link, call, delay_bucket, publish_confirmed};

/// While RabbitMQ is unreachable, `receive` keeps reconnecting (with backoff) this long before
/// it returns the error; the next call starts over.
const OUTAGE_MAX: Duration = Duration::from_secs(30);
/// The first and the longest wait between reconnection attempts.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Longest one wait for a delivery lasts before the ack timeouts are looked at again.
const WAIT_MAX: Duration = Duration::from_secs(1);

struct Live {
    channel: Channel,
    consumer: Consumer,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failures: u32,
    retry_at: Instant,
}

pub(crate) struct RabbitSubscriber {
    link: Arc<Link>,
    names: GroupNames,
    settings: SubscribeSettings,
    live: Option<Live>,
    /// Which channel the current deliveries came on: tokens of an older one are stale.
    epoch: u64,
    /// Handed out and not settled: delivery tag → when.
    outstanding: HashMap<u64, Instant>,
    outage: Option<Outage>,
}

impl std::fmt::Debug for RabbitSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitSubscriber")
            .field("queue", &self.names.queue)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn backoff(failures: u32) -> Duration {
    RECONNECT_BACKOFF_MIN
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(RECONNECT_BACKOFF_MAX)
}

impl RabbitSubscriber {
    pub(crate) fn new(
        link: Arc<Link>,
        names: GroupNames,
        settings: SubscribeSettings,
    ) -> RabbitSubscriber {
        RabbitSubscriber {
            link,
            names,
            settings,
            live: None,
            epoch: 0,
            outstanding: HashMap::new(),
            outage: None,
        }
    }

    fn url(&self) -> &str {
        &self.link.shown
    }

    /// Opens a channel and starts consuming (again, after the old channel was lost: what it had
    /// not settled is back in the queue).
    pub(crate) async fn open(&mut self) -> TransportResult<()> {
        self.live = None;
        self.outstanding.clear();
        let (_, channel) = self.link.channel().await?;
        let url = self.link.shown.clone();
        let prefetch = u16::try_from(self.settings.prefetch).unwrap_or(u16::MAX);
        call(
            &url,
            "set the prefetch",
            channel.basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await?;
        call(
            &url,
            "turn on publisher confirms",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        let consumed = tokio::time::timeout(
            crate::CALL_TIMEOUT,
            channel.basic_consume(
                short("the queue", &self.names.queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        let consumer = match consumed {
            Ok(Ok(c)) => c,
            Ok(Err(e)) if convert::is_not_found(&e) => {
                // The queue was deleted (by an operator, or RabbitMQ lost it): declared again,
                // empty, and consumed on the next attempt.
                tracing::warn!(queue = %self.names.queue, "the group's queue is gone; declaring it again");
                self.link
                    .declare_group(&self.names, self.settings.max_deliveries)
                    .await?;
                return Err(unavailable(
                    &url,
                    "consume the group's queue",
                    "the queue was gone and is declared again",
                ));
            }
            Ok(Err(e)) => {
                let _ = channel.close(200, "failed".into()).await;
                return Err(convert::error(&url, "consume the group's queue", &e));
            }
            Err(_) => {
                let _ = channel.close(200, "failed".into()).await;
                return Err(unavailable(
                    &url,
                    "consume the group's queue",
                    &format!("no answer within {:?}", crate::CALL_TIMEOUT),
                ));
            }
        };
        self.epoch += 1;
        self.live = Some(Live { channel, consumer });
        Ok(())
    }

    /// Deliveries handed out longer than the ack timeout ago go back to the queue.
    async fn give_back_expired(&mut self) -> TransportResult<()> {
        let timeout = self.settings.ack_timeout;
        let expired: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, at)| at.elapsed() >= timeout)
            .map(|(tag, _)| *tag)
            .collect();
        let Some(live) = &self.live else {
            return Ok(());
        };
        for tag in expired {
            tracing::warn!(queue = %self.names.queue, tag, "a delivery was not settled within the ack timeout; it goes back to the queue");
            call(
                &self.link.shown,
                "give back an unsettled delivery",
                live.channel.basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    },
                ),
            )
            .await?;
            // Only once it is given back: a `receive` dropped before leaves it to the next one.
            self.outstanding.remove(&tag);
        }
        Ok(())
    }

    /// One step: a delivery, or `None` after a quiet wait.
    async fn step(&mut self) -> TransportResult<Option<Incoming>> {
        if self.live.is_none() {
            self.open().await?;
        }
        self.give_back_expired().await?;
        let now = Instant::now();
        let wait = self
            .outstanding
            .values()
            .map(|at| (*at + self.settings.ack_timeout).saturating_duration_since(now))
            .min()
            .unwrap_or(WAIT_MAX)
            .clamp(Duration::from_millis(10), WAIT_MAX);
        let Some(live) = self.live.as_mut() else {
            return Ok(None);
        };
        let next = match tokio::time::timeout(wait, live.consumer.next()).await {
            Err(_) => return Ok(None),
            Ok(next) => next,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.live = None;
                return Err(convert::error(&self.link.shown, "receive", &e));
            }
            None => {
                self.live = None;
                return Err(unavailable(
                    &self.link.shown,
                    "receive",
                    "the consumer was cancelled (the channel closed or the queue was deleted)",
                ));
            }
        };
        let props = &delivery.properties;
        let before = convert::count(props, H_ATTEMPTS).unwrap_or(0)
            + convert::count(props, "x-delivery-count").unwrap_or(0);
        let attempt = u32::try_from(before.saturating_add(1)).unwrap_or(u32::MAX);
        self.outstanding
            .insert(delivery.delivery_tag, Instant::now());
        Ok(Some(Incoming {
            token: Token::new(format!("{}:{}", self.epoch, delivery.delivery_tag)),
            attempt,
            message: convert::message_of(props, &delivery.data),
        }))
    }

    /// The delivery tag of an outstanding delivery of the current channel.
    fn tag(&self, incoming: &Incoming) -> TransportResult<u64> {
        let parsed = incoming
            .token
            .as_str()
            .split_once(':')
            .and_then(|(e, t)| Some((e.parse::<u64>().ok()?, t.parse::<u64>().ok()?)));
        let Some((epoch, tag)) = parsed else {
            return Err(TransportError::Invalid(format!(
                "{:?} is not a RabbitMQ delivery token of this subscriber",
                incoming.token.as_str()
            )));
        };
        if epoch != self.epoch || self.live.is_none() {
            return Err(unavailable(
                self.url(),
                "settle",
                "the channel this delivery came on was lost; RabbitMQ delivers it again",
            ));
        }
        if !self.outstanding.contains_key(&tag) {
            return Err(TransportError::Rejected {
                broker: BROKER,
                action: "settle",
                detail: "this delivery is already settled, or it was given back to the queue \
                         after the ack timeout (it is delivered again)"
                    .into(),
            });
        }
        Ok(tag)
    }

    fn channel(&self) -> TransportResult<&Channel> {
        match &self.live {
            Some(l) => Ok(&l.channel),
            None => Err(unavailable(self.url(), "settle", "the channel was lost")),
        }
    }

    /// Acks `tag`; a failure drops the channel (its deliveries come again).
    async fn ack_tag(&mut self, tag: u64) -> TransportResult<()> {
        let result = call(
            &self.link.shown,
            "ack",
            self.channel()?.basic_ack(tag, BasicAckOptions::default()),
        )
        .await;
        self.outstanding.remove(&tag);
        if result.is_err() {
            self.live = None;
        }
        result
    }

    /// Publishes a confirmed copy of `incoming` to `queue` (default exchange), then acks it.
    async fn move_to(
        &mut self,
        incoming: &Incoming,
        tag: u64,
        queue: &str,
        extra: &[(&str, AMQPValue)],
    ) -> TransportResult<()> {
        let props = convert::properties_of(&incoming.message, extra)?;
        let routing_key = short("the queue", queue)?;
        let result = publish_confirmed(
            &self.link.shown,
            self.channel()?,
            vec![(
                "".into(),
                routing_key,
                true,
                incoming.message.payload.as_slice(),
                props,
            )],
        )
        .await;
        if let Err(e) = result {
            if e.is_retryable() {
                self.live = None;
            }
            return Err(e);
        }
        self.ack_tag(tag).await
    }
}

fn attempts_header(attempt: u32) -> (&'static str, AMQPValue) {
    (H_ATTEMPTS, AMQPValue::LongLongInt(i64::from(attempt)))
}

#[async_trait::async_trait]
impl Subscriber for RabbitSubscriber {
    async fn receive(&mut self) -> TransportResult<Incoming> {
        loop {
            if let Some(o) = &self.outage {
                tokio::time::sleep_until(o.retry_at).await;
            }
            match self.step().await {
                Ok(Some(incoming)) => {
                    self.outage = None;
                    return Ok(incoming);
                }
                Ok(None) => self.outage = None,
                Err(e) if e.is_retryable() => {
                    self.live = None;
                    let now = Instant::now();
                    let o = self.outage.get_or_insert(Outage {
                        since: now,
                        failures: 0,
                        retry_at: now,
                    });
                    o.failures += 1;
                    o.retry_at = now + backoff(o.failures);
                    tracing::warn!(
                        error = %e, failures = o.failures,
                        "a RabbitMQ subscriber lost its channel; reconnecting"
                    );
                    if o.since.elapsed() >= OUTAGE_MAX {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn ack(&mut self, incoming: &Incoming) -> TransportResult<()> {
        let tag = self.tag(incoming)?;
        self.ack_tag(tag).await
    }

    async fn retry(&mut self, incoming: &Incoming, delay: Duration) -> TransportResult<()> {
        let tag = self.tag(incoming)?;
        let ms = delay_bucket(delay.min(RETRY_DELAY_MAX));
        let declared = self
            .link
            .declare_delay(self.channel()?, &self.names, ms)
            .await;
        let queue = match declared {
            Ok(q) => q,
            Err(e) => {
                self.live = None;
                return Err(e);
            }
        };
        self.move_to(incoming, tag, &queue, &[attempts_header(incoming.attempt)])
            .await
    }

    async fn dead_letter(&mut self, incoming: &Incoming, reason: &str) -> TransportResult<()> {
        let tag = self.tag(incoming)?;
        let dead = self.names.dead.clone();
        let reason = AMQPValue::LongString(LongString::from(convert::reason(reason)));
        self.move_to(
            incoming,
            tag,
            &dead,
            &[attempts_header(incoming.attempt), (H_DEAD_REASON, reason)],
        )
        .await
    }

    async fn close(mut self: Box<Self>) -> TransportResult<()> {
        let Some(live) = self.live.take() else {
            return Ok(());
        };
        let url = self.link.shown.clone();
        let tag = live.consumer.tag();
        let cancelled = call(
            &url,
            "cancel the consumer",
            live.channel
                .basic_cancel(tag, BasicCancelOptions::default()),
        )
        .await;
        // Closing the channel gives what it had not settled back to the queue at once.
        let closed = call(
            &url,
            "close the channel",
            live.channel.close(200, "closed".into()),
        )
        .await;
        cancelled.and(closed)
    }
}

impl Drop for RabbitSubscriber {
    /// A subscriber dropped without `close` (a crash, a dropped task) still gives its unsettled
    /// deliveries back at once: its channel is closed in the background.
    fn drop(&mut self) {
        if let Some(live) = self.live.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let _ = tokio::time::timeout(
                    crate::CALL_TIMEOUT,
                    live.channel.close(200, "dropped".into()),
                )
                .await;
            });
        }
    }
}
