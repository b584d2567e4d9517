//! One blocking Redis connection, to a single instance or a Redis Cluster, that reconnects on
//! demand with a back-off and reports whether it is up.
//!
//! Used only by the control-plane and fleet threads: never on a shard. Every call has the
//! configured timeouts, so a Redis that stops answering costs a thread at most one timeout
//! per call, and after a failure `get` refuses at once until the back-off has passed (a dead
//! Redis does not cost a connect attempt per request).

use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{Client, Connection, ConnectionLike, RedisResult};

use crate::config::FleetConfig;

/// Wait after a failed connect before the next attempt; doubles up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A connection to one Redis or to a Cluster.
pub enum Conn {
    /// `redis = "redis://..."`.
    Single(Connection),
    /// `redis = [seeds...]`.
    Cluster(Box<ClusterConnection>),
}

impl Conn {
    /// The connection as the crate's command interface.
    pub fn like(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Single(c) => c,
            Conn::Cluster(c) => &mut **c,
        }
    }

    /// Opens one connection with the configured timeouts; `read_timeout` overrides the call
    /// timeout (the tailing connection blocks in XREAD longer than a call may take).
    pub fn open(config: &FleetConfig, read_timeout: Option<Duration>) -> RedisResult<Conn> {
        let connect = Duration::from_millis(config.connect_timeout_ms);
        let io = Duration::from_millis(config.io_timeout_ms);
        let read = read_timeout.unwrap_or(io);
        if config.cluster {
            let client = ClusterClient::builder(config.redis.iter().map(String::as_str))
                .connection_timeout(connect)
                .response_timeout(read)
                .retries(1)
                .build()?;
            let c = client.get_connection()?;
            c.set_write_timeout(Some(io))?;
            c.set_read_timeout(Some(read))?;
            Ok(Conn::Cluster(Box::new(c)))
        } else {
            let client = Client::open(config.redis[0].as_str())?;
            let c = client.get_connection_with_timeout(connect)?;
            c.set_write_timeout(Some(io))?;
            c.set_read_timeout(Some(read))?;
            Ok(Conn::Single(c))
        }
    }
}

/// A connection opened on demand: after a failure the next `get` waits out a back-off.
pub struct Link {
    config: FleetConfig,
    read_timeout: Option<Duration>,
    conn: Option<Conn>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Why the last attempt or call failed (for the 503's description and the log).
    pub last_error: Option<String>,
}

impl Link {
    /// A link that connects on first use.
    pub fn new(config: &FleetConfig, read_timeout: Option<Duration>) -> Link {
        Link {
            config: config.clone(),
            read_timeout,
            conn: None,
            retry_at: None,
            backoff: MIN_BACKOFF,
            last_error: None,
        }
    }

    /// Whether the last call succeeded (false before the first).
    pub fn is_up(&self) -> bool {
        self.conn.is_some()
    }

    /// The open connection, connecting first when needed; `None` while Redis is unreachable
    /// (within the back-off after a failure, or when this attempt failed).
    pub fn get(&mut self) -> Option<&mut Conn> {
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return None;
            }
            match Conn::open(&self.config, self.read_timeout) {
                Ok(conn) => {
                    if self.last_error.is_some() {
                        tracing::info!("fleet: connected to Redis");
                    }
                    self.conn = Some(conn);
                    self.retry_at = None;
                    self.backoff = MIN_BACKOFF;
                    self.last_error = None;
                }
                Err(e) => {
                    self.failed(&e);
                    return None;
                }
            }
        }
        self.conn.as_mut()
    }

    /// Drops the connection after a failed call; the next `get` reconnects after a back-off.
    pub fn failed(&mut self, e: &redis::RedisError) {
        if self.last_error.is_none() {
            tracing::warn!(error = %e, "fleet: Redis unreachable");
        }
        self.last_error = Some(e.to_string());
        self.conn = None;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Runs `f` on the connection; a transport error drops it (a server error, such as a
    /// script's, keeps it).
    pub fn call<T>(
        &mut self,
        f: impl FnOnce(&mut Conn) -> RedisResult<T>,
    ) -> Option<RedisResult<T>> {
        let conn = self.get()?;
        let result = f(conn);
        if let Err(e) = &result {
            if !matches!(e.kind(), redis::ErrorKind::Server(_)) {
                self.failed(e);
            }
        }
        Some(result)
    }
}
