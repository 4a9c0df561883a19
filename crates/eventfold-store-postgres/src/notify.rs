//! The `LISTEN` side of live delivery: one connection per store listens on the schema's channel
//! and wakes the subscriptions whenever another store (or this one) commits a write. A hint
//! only: subscriptions also poll, so a lost notification delays, never loses, an event. The
//! connection is re-established after a failure.

use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt as _;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::Inner;

/// How long to wait before connecting again after the listening connection failed.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Starts the listener; it ends once the store is dropped.
pub(crate) fn spawn_listener(inner: Weak<Inner>, config: tokio_postgres::Config) {
    tokio::spawn(async move {
        loop {
            let Some(channel) = inner.upgrade().map(|i| i.channel.clone()) else {
                return;
            };
            match config.connect(NoTls).await {
                Ok((client, mut connection)) => {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    let sql = format!("LISTEN \"{channel}\"");
                    let listen = client.batch_execute(&sql);
                    let mut listen = std::pin::pin!(listen);
                    // Drive the connection while the LISTEN runs, then on its own.
                    let mut listening = false;
                    loop {
                        tokio::select! {
                            r = &mut listen, if !listening => {
                                if let Err(e) = r {
                                    tracing::warn!(error = %e, "LISTEN failed; subscriptions poll");
                                    break;
                                }
                                listening = true;
                                // A write may have landed while we were not listening.
                                match inner.upgrade() {
                                    Some(i) => i.wake(),
                                    None => return,
                                }
                            }
                            m = messages.next() => match m {
                                Some(Ok(AsyncMessage::Notification(_))) => match inner.upgrade() {
                                    Some(i) => i.wake(),
                                    None => return,
                                },
                                Some(Ok(_)) => {}
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "the LISTEN connection failed; reconnecting");
                                    break;
                                }
                                None => break,
                            },
                            () = tokio::time::sleep(Duration::from_secs(5)) => {
                                if inner.strong_count() == 0 {
                                    return;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot open the LISTEN connection; retrying");
                }
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    });
}
