//! Where each container's logs were read to, kept across restarts.
//!
//! `docker-checkpoints.json` in the state directory holds, per container
//! id, the [`Checkpoint`] of the last lines kept (on disk in the queue, or
//! applied in Redis without one), and `watching_since`: when cowlogd first
//! used the directory. A container without a checkpoint is read from
//! `watching_since`: containers created later from their first line, those
//! running at the very first start from then on.
//!
//! The file is rewritten (a temporary file renamed over it) every
//! [`FLUSH_EVERY`] when something changed, and at shutdown. With the disk
//! queue, the checkpoint of every read cycle also rides in the queue record
//! holding its lines, so a crash between the two loses nothing and doubles
//! nothing: at start the later of the file's and the queue's wins. A queue
//! segment is deleted no sooner than two seconds after Redis applied it, by
//! which time the file holds what it held.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cowlogd_parsers::Timestamp;
use cowlogd_parsers::docker_logs::{Checkpoint, Position};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// The file's name in the state directory.
pub const FILE_NAME: &str = "docker-checkpoints.json";
/// How often a changed checkpoint reaches the file.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// The checkpoints, in memory and (with a state directory) on disk.
pub struct CheckpointStore {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

struct State {
    watching_since: Timestamp,
    containers: HashMap<String, Checkpoint>,
    changed: bool,
}

/// The file's contents.
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// `[secs, nanos]`.
    watching_since: [i64; 2],
    /// id → `{"stdout": [secs, nanos, count], "stderr": …}`.
    containers: HashMap<String, StoredCheckpoint>,
}

#[derive(Serialize, Deserialize)]
struct StoredCheckpoint {
    stdout: [i64; 3],
    stderr: [i64; 3],
}

fn to_stored(position: Position) -> [i64; 3] {
    [
        position.time.secs,
        i64::from(position.time.nanos),
        i64::from(position.count),
    ]
}

fn from_stored(stored: [i64; 3]) -> Position {
    Position {
        time: Timestamp::new(stored[0], u32::try_from(stored[1]).unwrap_or(0)),
        count: u32::try_from(stored[2]).unwrap_or(0),
    }
}

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused.
    #[error("docker state {path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
}

impl CheckpointStore {
    /// Checkpoints in memory only: reading starts from `now`.
    pub fn in_memory(now: Timestamp) -> CheckpointStore {
        CheckpointStore {
            path: None,
            state: Mutex::new(State {
                watching_since: now,
                containers: HashMap::new(),
                changed: false,
            }),
        }
    }

    /// Opens (or starts) the checkpoints in `dir`, merged with the
    /// checkpoint tokens the disk queue held at start. A file that does
    /// not read is set aside (renamed `.damaged`) and reported; the queue's
    /// tokens still count.
    ///
    /// # Errors
    /// When the directory cannot be made or written.
    pub fn open(
        dir: &Path,
        tokens: impl IntoIterator<Item = (String, Checkpoint)>,
        now: Timestamp,
    ) -> Result<CheckpointStore, StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| StoreError::Io { path, error }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(FILE_NAME);
        let mut state = State {
            watching_since: now,
            containers: HashMap::new(),
            changed: true,
        };
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Stored>(&bytes) {
                Ok(stored) => {
                    state.watching_since = Timestamp::new(
                        stored.watching_since[0],
                        u32::try_from(stored.watching_since[1]).unwrap_or(0),
                    );
                    state.containers = stored
                        .containers
                        .into_iter()
                        .map(|(id, c)| {
                            let checkpoint = Checkpoint {
                                stdout: from_stored(c.stdout),
                                stderr: from_stored(c.stderr),
                            };
                            (id, checkpoint)
                        })
                        .collect();
                    state.changed = false;
                }
                Err(error) => {
                    let aside = path.with_extension("json.damaged");
                    let _ = std::fs::rename(&path, &aside);
                    tracing::error!(path = %path.display(), %error, aside = %aside.display(), "the Docker checkpoint file does not read; set aside, reading containers without a checkpoint from now");
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no Docker checkpoints yet: containers running now are read from now on, containers started later from their first line");
            }
            Err(error) => return Err(io(&path)(error)),
        }
        let mut from_queue = 0;
        for (id, checkpoint) in tokens {
            let merged = state
                .containers
                .get(&id)
                .map_or(checkpoint, |known| known.later(&checkpoint));
            if state.containers.get(&id) != Some(&merged) {
                from_queue += 1;
                state.changed = true;
            }
            state.containers.insert(id, merged);
        }
        if from_queue > 0 {
            tracing::info!(
                containers = from_queue,
                "Docker checkpoints taken from the disk queue (newer than the file: cowlogd stopped before writing it)"
            );
        }
        let store = CheckpointStore {
            path: Some(path),
            state: Mutex::new(state),
        };
        // The first start's moment must survive a crash right after it.
        store.write().map_err(|error| StoreError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where container `id` was read to, if anywhere.
    pub fn get(&self, id: &str) -> Option<Checkpoint> {
        self.lock().containers.get(id).copied()
    }

    /// Where a container without a checkpoint is read from.
    pub fn watching_since(&self) -> Timestamp {
        self.lock().watching_since
    }

    /// Container `id` was read (and kept) to `checkpoint`.
    pub fn update(&self, id: &str, checkpoint: Checkpoint) {
        let mut state = self.lock();
        match state.containers.get_mut(id) {
            Some(known) => *known = known.later(&checkpoint),
            None => {
                state.containers.insert(id.to_owned(), checkpoint);
            }
        }
        state.changed = true;
    }

    /// Container `id` is gone (removed): its checkpoint too.
    pub fn forget(&self, id: &str) {
        let mut state = self.lock();
        if state.containers.remove(id).is_some() {
            state.changed = true;
        }
    }

    /// Drops the checkpoints of containers not in `present` (removed
    /// while cowlogd was not running).
    pub fn retain(&self, present: &std::collections::HashSet<String>) {
        let mut state = self.lock();
        let before = state.containers.len();
        state.containers.retain(|id, _| present.contains(id));
        if state.containers.len() != before {
            state.changed = true;
        }
    }

    /// Writes the file when something changed; counted and logged when it
    /// fails (the next flush retries).
    pub fn flush(&self) {
        if let Err(error) = self.write() {
            metrics::DOCKER_CHECKPOINT_ERRORS.counter().increment(1);
            crate::warn_limited!(%error, "cannot write the Docker checkpoint file; a restart may read some lines again");
        }
    }

    fn write(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let stored = {
            let mut state = self.lock();
            if !state.changed {
                return Ok(());
            }
            state.changed = false;
            Stored {
                version: 1,
                watching_since: [
                    state.watching_since.secs,
                    i64::from(state.watching_since.nanos),
                ],
                containers: state
                    .containers
                    .iter()
                    .map(|(id, c)| {
                        let stored = StoredCheckpoint {
                            stdout: to_stored(c.stdout),
                            stderr: to_stored(c.stderr),
                        };
                        (id.clone(), stored)
                    })
                    .collect(),
            }
        };
        let written = write_atomically(path, &stored);
        if written.is_err() {
            self.lock().changed = true;
        }
        written
    }

    /// Flushes every [`FLUSH_EVERY`] until `stop`; the caller flushes once
    /// more when the readers have ended.
    pub async fn flush_until(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(),
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Writes `stored` to a temporary file, syncs it, renames it over `path`
/// and syncs the directory: the file is the old one or the new one.
fn write_atomically(path: &Path, stored: &Stored) -> std::io::Result<()> {
    let temporary = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(stored)?;
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_data()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, count: u32) -> Checkpoint {
        Checkpoint {
            stdout: Position {
                time: Timestamp::new(secs, 0),
                count,
            },
            stderr: Position::from_time(Timestamp::new(secs, 0)),
        }
    }

    #[test]
    fn checkpoints_survive_a_reopen_and_the_queues_newer_tokens_win() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), [], Timestamp::new(100, 0)).unwrap();
        store.update("a", at(200, 2));
        store.update("b", at(300, 1));
        store.flush();
        drop(store);
        let store = CheckpointStore::open(
            dir.path(),
            [("a".to_owned(), at(250, 1)), ("b".to_owned(), at(10, 9))],
            Timestamp::new(999, 0),
        )
        .unwrap();
        assert_eq!(store.watching_since(), Timestamp::new(100, 0));
        assert_eq!(store.get("a"), Some(at(250, 1)));
        assert_eq!(store.get("b"), Some(at(300, 1)));
        store.forget("a");
        store.flush();
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(!String::from_utf8(bytes).unwrap().contains("\"a\""));
    }

    #[test]
    fn a_write_that_fails_is_made_again_at_the_next_flush() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state");
        let store = CheckpointStore::open(&dir, [], Timestamp::new(1, 0)).unwrap();
        store.update("a", at(7, 1));
        std::fs::remove_dir_all(&dir).unwrap();
        store.flush();
        std::fs::create_dir(&dir).unwrap();
        store.flush();
        let bytes = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        assert!(bytes.contains("\"a\""), "{bytes}");
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_the_store_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let store = CheckpointStore::open(dir.path(), [], Timestamp::new(5, 0)).unwrap();
        assert_eq!(store.watching_since(), Timestamp::new(5, 0));
        assert!(dir.path().join("docker-checkpoints.json.damaged").exists());
    }
}
