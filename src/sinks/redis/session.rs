//! The connection to Redis, and the fence that makes a retry safe.
//!
//! A transaction whose reply never came (a response timeout, a dropped
//! connection) may still be sitting in Redis' socket buffer and run later.
//! Before retrying, the writer *fences* it: on the new connection it kills
//! every connection that carried such a transaction (`CLIENT KILL ID …
//! ADDR …`: Redis then discards whatever that connection had not run yet),
//! and only then reads the marker — the sequence number of the last
//! message applied. `MULTI … EXEC` is all or nothing, so after the fence
//! the marker tells for certain whether the window was applied.
//!
//! Where Redis cannot fence (no `CLIENT INFO` before 6.2, the command
//! renamed away, an ACL user without `client|kill`), a retry is made
//! anyway — the alternative is to stop writing — and counted in
//! `cowlogd_redis_unfenced_retries_total`; the start-up log says once why.

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult, ServerError, Value};

/// Most connections remembered for fencing; attempts are at least the
/// back-off apart and each adds at most one, so this is never reached in
/// practice (an older one is forgotten, and logged, if it is).
const MAX_SUSPECTS: usize = 256;

/// Who a connection is on the server, for `CLIENT KILL` filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `CLIENT INFO`'s `id=`.
    pub id: i64,
    /// `CLIENT INFO`'s `addr=`: together with `id`, a restarted server's
    /// new client with a reused id is never hit.
    pub addr: String,
}

impl Identity {
    /// Parses `id=… addr=…` out of a `CLIENT INFO` line.
    pub fn parse(info: &str) -> Option<Identity> {
        let field = |name: &str| {
            info.split_ascii_whitespace()
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        };
        Some(Identity {
            id: field("id")?.parse().ok()?,
            addr: field("addr")?.to_owned(),
        })
    }
}

/// An open connection and who it is.
pub struct Session {
    /// The connection.
    pub connection: MultiplexedConnection,
    /// `None` when the server has no `CLIENT INFO` (Redis < 6.2): such a
    /// connection cannot be fenced.
    pub identity: Option<Identity>,
}

/// Opens sessions.
pub struct Connector {
    client: Client,
    config: AsyncConnectionConfig,
}

impl Connector {
    /// Connecting with `client`, timeouts from `config`.
    pub fn new(client: Client, config: AsyncConnectionConfig) -> Connector {
        Connector { client, config }
    }

    /// Connects and learns the connection's identity.
    pub async fn connect(&self) -> Result<Session, RedisError> {
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let info: RedisResult<String> = redis::cmd("CLIENT")
            .arg("INFO")
            .query_async(&mut connection)
            .await;
        let identity = match info {
            Ok(info) => {
                let identity = Identity::parse(&info);
                if identity.is_none() {
                    fencing_unavailable(&format!(
                        "CLIENT INFO answered without id= and addr=: {info:?}"
                    ));
                }
                identity
            }
            Err(error) if error.code().is_some() => {
                fencing_unavailable(&format!(
                    "CLIENT INFO refused ({error}); it needs Redis 6.2 or newer and the permission"
                ));
                None
            }
            Err(error) => return Err(error),
        };
        Ok(Session {
            connection,
            identity,
        })
    }
}

/// Says once per process why a retry cannot be fenced (every retry made
/// without one is counted).
fn fencing_unavailable(why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::warn!(
            why,
            "Redis connections cannot be fenced: a retry after a lost reply may write a window twice (counted in cowlogd_redis_unfenced_retries_total)"
        );
    });
}

/// Connections whose transaction's outcome is unknown, and whether the
/// window being written may already be applied.
#[derive(Debug, Default)]
pub struct Fence {
    suspects: Vec<Identity>,
    unresolved: bool,
    /// A transaction went out on a connection that cannot be named to
    /// `CLIENT KILL`: the next retry is unfenced.
    unfenceable: bool,
}

/// Why the fence could not be completed.
#[derive(Debug)]
pub enum FenceError {
    /// No answer (the fence itself timed out, the connection broke).
    Lost(RedisError),
    /// Redis answered the marker read with an error (e.g. `LOADING`).
    Refused(ServerError),
    /// The marker holds something that is not a sequence number: how far
    /// Redis got is unknown, so nothing is written again until it is.
    Unreadable(String),
}

impl Fence {
    /// Whether the next attempt must fence and read the marker first.
    pub fn is_unresolved(&self) -> bool {
        self.unresolved
    }

    /// A transaction is about to go out on `session`.
    pub fn sending(&mut self, session: &Session) {
        self.unresolved = true;
        if session.identity.is_none() {
            self.unfenceable = true;
        }
        if let Some(identity) = &session.identity {
            if self.suspects.len() == MAX_SUSPECTS {
                tracing::error!(
                    "more than {MAX_SUSPECTS} Redis connections with unanswered writes; forgetting the oldest"
                );
                self.suspects.remove(0);
            }
            self.suspects.push(identity.clone());
        }
    }

    /// Redis answered the transaction (applied it, or refused it whole):
    /// its outcome is known.
    pub fn answered(&mut self, session: &Session) {
        match &session.identity {
            Some(identity) => self.suspects.retain(|s| s != identity),
            None => self.unfenceable = false,
        }
        self.unresolved = !self.suspects.is_empty();
    }

    /// Kills the suspects from `session` (a new connection), then reads the
    /// marker: the last sequence number Redis applied (0 when none).
    pub async fn resolve(
        &mut self,
        session: &mut Session,
        marker: &str,
    ) -> Result<u64, FenceError> {
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        for suspect in &self.suspects {
            pipeline
                .cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(suspect.id)
                .arg("ADDR")
                .arg(&suspect.addr);
        }
        pipeline.cmd("GET").arg(marker);
        let mut replies = pipeline
            .query_async::<Vec<RedisResult<Value>>>(&mut session.connection)
            .await
            .map_err(FenceError::Lost)?;
        let marker_reply = replies.pop();
        let mut unfenced = std::mem::take(&mut self.unfenceable);
        for reply in &replies {
            if let Err(error) = reply {
                // Without the permission to kill, a lost transaction may
                // still run: it can write twice.
                fencing_unavailable(&format!("CLIENT KILL refused: {error}"));
                unfenced = true;
            }
        }
        if unfenced && self.unresolved {
            crate::metrics::REDIS_UNFENCED_RETRIES
                .counter()
                .increment(1);
        }
        self.suspects.clear();
        let no_reply = || {
            FenceError::Lost(RedisError::from(std::io::Error::other(
                "no reply to the marker read",
            )))
        };
        let applied = match marker_reply {
            Some(Ok(Value::Nil)) => 0,
            Some(Ok(value)) => match redis::from_redis_value::<u64>(value) {
                Ok(applied) => applied,
                Err(error) => return Err(FenceError::Unreadable(error.to_string())),
            },
            Some(Err(error)) => {
                return Err(error
                    .into_server_errors()
                    .and_then(|errors| errors.first().map(|(_, e)| e.clone()))
                    .map_or_else(no_reply, FenceError::Refused));
            }
            None => return Err(no_reply()),
        };
        self.unresolved = false;
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_comes_from_client_info() {
        let info = "id=42 addr=127.0.0.1:51234 laddr=127.0.0.1:6379 fd=8 name= age=0 idle=0 flags=N db=0\n";
        assert_eq!(
            Identity::parse(info),
            Some(Identity {
                id: 42,
                addr: "127.0.0.1:51234".into()
            })
        );
        assert_eq!(Identity::parse("laddr=1 fd=2"), None);
    }
}
