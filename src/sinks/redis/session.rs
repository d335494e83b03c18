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
            Ok(info) => Identity::parse(&info),
            Err(error) if error.code().is_some() => None,
            Err(error) => return Err(error),
        };
        if identity.is_none() {
            crate::warn_limited!(
                "Redis has no CLIENT INFO (needs 6.2 or newer): a retry after a lost reply cannot be fenced and may write twice"
            );
        }
        Ok(Session {
            connection,
            identity,
        })
    }
}

/// Connections whose transaction's outcome is unknown, and whether the
/// window being written may already be applied.
#[derive(Debug, Default)]
pub struct Fence {
    suspects: Vec<Identity>,
    unresolved: bool,
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
        if let Some(identity) = &session.identity {
            self.suspects.retain(|s| s != identity);
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
        for reply in &replies {
            if let Err(error) = reply {
                // Without the permission to kill, a lost transaction may
                // still run: say so loudly, it can write twice.
                crate::warn_limited!(%error, "Redis refused CLIENT KILL: a retried write may be applied twice");
            }
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
