//! A connection to Redis that reconnects: the first command after a failure opens a new one.
//! Errors are turned into [`TransportError`]s here, naming the URL without its password.

use std::time::Duration;

use eventfold_transport::{TransportError, TransportResult};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError, RetryMethod};

use crate::BROKER;

/// How long opening a connection may take before Redis counts as unavailable.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a non-blocking command may wait for its answer (a batch of `PUBLISH_BATCH_MAX`
/// entries included) before Redis counts as unavailable.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One logical connection: a multiplexed connection, replaced after a failure.
pub(crate) struct Link {
    client: redis::Client,
    /// The URL without its password, for messages.
    url: String,
    config: AsyncConnectionConfig,
    /// The current connection and its generation (so a failure on an old one does not drop a
    /// newer one).
    current: tokio::sync::Mutex<(u64, Option<MultiplexedConnection>)>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link to `client`; `response_timeout` bounds each command's wait (a blocking read's
    /// own timeout must fit in it).
    pub(crate) fn new(client: redis::Client, url: String, response_timeout: Duration) -> Link {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        Link {
            client,
            url,
            config,
            current: tokio::sync::Mutex::new((0, None)),
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The open connection, or a new one.
    async fn get(&self) -> TransportResult<(u64, MultiplexedConnection)> {
        let mut current = self.current.lock().await;
        if let (generation, Some(conn)) = &*current {
            return Ok((*generation, conn.clone()));
        }
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client
                .get_multiplexed_async_connection_with_config(&self.config),
        )
        .await
        .map_err(|_| TransportError::Unavailable {
            broker: BROKER,
            url: self.url.clone(),
            detail: format!(
                "no connection within {CONNECT_TIMEOUT:?}; check that redis-server runs there"
            ),
        })?
        .map_err(|e| error(&self.url, "connect", e))?;
        current.0 += 1;
        current.1 = Some(conn.clone());
        Ok((current.0, conn))
    }

    /// Opens the connection now (to fail early when Redis is not there).
    pub(crate) async fn open(&self) -> TransportResult<()> {
        self.get().await.map(|_| ())
    }

    /// Runs `cmd` (a command or a pipeline); after a connection failure the next call
    /// reconnects.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        action: &'static str,
        cmd: &(impl Runnable + ?Sized),
    ) -> TransportResult<T> {
        let (generation, mut conn) = self.get().await?;
        match cmd.run(&mut conn).await {
            Ok(value) => T::from_redis_value(value).map_err(|e| TransportError::Rejected {
                broker: BROKER,
                action,
                detail: format!("unexpected answer: {e}"),
            }),
            Err(e) => {
                let err = error(&self.url, action, e);
                if err.is_retryable() {
                    let mut current = self.current.lock().await;
                    if current.0 == generation {
                        current.1 = None;
                    }
                }
                Err(err)
            }
        }
    }
}

/// A command or a pipeline.
pub(crate) trait Runnable: Sync {
    fn run<'a>(
        &'a self,
        conn: &'a mut MultiplexedConnection,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<redis::Value, RedisError>> + Send + 'a>,
    >;
}

impl Runnable for redis::Cmd {
    fn run<'a>(
        &'a self,
        conn: &'a mut MultiplexedConnection,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<redis::Value, RedisError>> + Send + 'a>,
    > {
        Box::pin(self.query_async::<redis::Value>(conn))
    }
}

impl Runnable for redis::Pipeline {
    fn run<'a>(
        &'a self,
        conn: &'a mut MultiplexedConnection,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<redis::Value, RedisError>> + Send + 'a>,
    > {
        Box::pin(self.query_async::<redis::Value>(conn))
    }
}

/// A Redis error as a transport error: connection failures, timeouts and a server that is
/// loading, busy or failing over are `Unavailable` (retry later); the rest is `Rejected`.
pub(crate) fn error(url: &str, action: &'static str, e: RedisError) -> TransportError {
    let retryable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.retry_method(),
            RetryMethod::WaitAndRetry | RetryMethod::Reconnect | RetryMethod::RetryImmediately
        ) && e.kind() != redis::ErrorKind::AuthenticationFailed;
    if retryable {
        let what_to_do = if action == "connect" {
            "check that redis-server runs there and the URL is right; retry later"
        } else {
            "retry later (the next call reconnects)"
        };
        TransportError::Unavailable {
            broker: BROKER,
            url: url.to_owned(),
            detail: format!("{action}: {e}; {what_to_do}"),
        }
    } else if e.kind() == redis::ErrorKind::AuthenticationFailed {
        TransportError::Rejected {
            broker: BROKER,
            action,
            detail: format!(
                "authentication failed at {url}: {e}; check the user and password in the URL"
            ),
        }
    } else {
        TransportError::Rejected {
            broker: BROKER,
            action,
            detail: e.to_string(),
        }
    }
}

/// Whether `e` says a consumer group (or its stream) is gone, e.g. after Redis lost its data.
pub(crate) fn is_no_group(e: &TransportError) -> bool {
    matches!(e, TransportError::Rejected { detail, .. } if detail.contains("NOGROUP"))
}
