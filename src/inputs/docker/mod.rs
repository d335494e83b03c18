//! Containers' logs read from the Docker Engine API (`[docker] socket`),
//! with Docker's default `json-file` driver left in place: `docker logs`
//! keeps working and the file on disk is the buffer while cowlogd is away.
//!
//! The [`run`] loop connects, lists every container and follows the
//! events (start, die, destroy, rename); each selected container gets one
//! log stream at a time ([`follow`]), from its checkpoint
//! ([`checkpoint`]). When the API goes away (dockerd restarts) the streams
//! end, `/ready` says so, and the loop connects again with back-off, lists
//! again and resumes every container from its checkpoint: a container that
//! stopped meanwhile has its last lines read.
//!
//! Only reads: `GET /info`, `/containers/json`, `/containers/{id}/json`,
//! `/containers/{id}/logs`, `/events`.

mod api;
pub mod checkpoint;
mod follow;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DockerSettings;
use crate::health::Health;
use crate::metrics;
use crate::pipeline::Pipeline;
use api::{Api, ApiError, ContainerMeta};
use checkpoint::CheckpointStore;
use follow::{Ended, OpenStream, Stream};

/// First wait before connecting again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether the API answers, and if not why: what `/ready` says of it.
#[derive(Debug)]
pub struct DockerHealth {
    health: Health,
    endpoint: String,
}

impl DockerHealth {
    fn new(endpoint: String) -> DockerHealth {
        DockerHealth {
            health: Health::default(),
            endpoint,
        }
    }

    /// Whether the API answered and its events are followed.
    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    /// One line for `/ready`.
    pub fn report(&self) -> String {
        if self.is_up() {
            return format!("docker connected ({})\n", self.endpoint);
        }
        let error = self.health.last_error();
        if error.is_empty() {
            format!("docker not connected yet ({})\n", self.endpoint)
        } else {
            format!("docker not connected ({}): {error}\n", self.endpoint)
        }
    }

    fn set_up(&self) {
        self.health.set_up();
        metrics::DOCKER_CONNECTED.gauge().set(1.0);
    }

    fn set_down(&self, error: String) {
        self.health.set_down(error);
        metrics::DOCKER_CONNECTED.gauge().set(0.0);
    }
}

/// The Docker source, made at start.
pub struct DockerSource {
    settings: DockerSettings,
    pipeline: Arc<Pipeline>,
    store: CheckpointStore,
    health: Arc<DockerHealth>,
    max_message: usize,
    own_id: Option<String>,
}

impl DockerSource {
    /// The source for `settings`; checkpoints from `settings.state_dir`
    /// merged with those the disk queue held at start.
    ///
    /// # Errors
    /// When the state directory cannot be used.
    pub fn new(
        settings: DockerSettings,
        pipeline: Arc<Pipeline>,
        max_message: usize,
    ) -> anyhow::Result<DockerSource> {
        let now = crate::pipeline::wall_clock();
        let store = match &settings.state_dir {
            Some(dir) => {
                let on_disk = pipeline
                    .checkpoints_on_disk()
                    .map(|(id, checkpoint)| (id.to_owned(), checkpoint));
                CheckpointStore::open(dir, on_disk, now)?
            }
            None => {
                tracing::warn!(
                    "[docker] has no state directory (docker.state_dir or queue.dir): containers are read from now on, and lines printed while cowlogd is not running are not read"
                );
                CheckpointStore::in_memory(now)
            }
        };
        let own_id = if settings.exclude_self {
            std::fs::read_to_string("/proc/self/mountinfo")
                .ok()
                .and_then(|mounts| own_container_id(&mounts).map(str::to_owned))
        } else {
            None
        };
        if let Some(id) = &own_id {
            tracing::info!(container = %&id[..12], "leaving out cowlogd's own container");
        }
        let health = Arc::new(DockerHealth::new(settings.endpoint.to_string()));
        metrics::DOCKER_CONNECTED.gauge().set(0.0);
        Ok(DockerSource {
            settings,
            pipeline,
            store,
            health,
            max_message,
            own_id,
        })
    }

    /// What `/ready` asks of the source.
    pub fn health(&self) -> Arc<DockerHealth> {
        self.health.clone()
    }

    fn selected(&self, meta: &ContainerMeta) -> bool {
        selected(&self.settings, self.own_id.as_deref(), meta)
    }
}

/// Whether `meta`'s container is read: not cowlogd's own, not excluded,
/// and included (everything is, without `include`).
fn selected(settings: &DockerSettings, own_id: Option<&str>, meta: &ContainerMeta) -> bool {
    if own_id == Some(meta.id.as_str()) {
        return false;
    }
    let matches = |glob: &crate::router::ContainerGlob| {
        glob.matches(&meta.name, meta.service.as_deref(), meta.project.as_deref())
    };
    if settings.exclude.iter().any(matches) {
        return false;
    }
    settings.include.is_empty() || settings.include.iter().any(matches)
}

/// Follows containers until `stop`, then waits for their streams to end
/// and writes the checkpoints a last time.
pub async fn run(source: DockerSource, stop: CancellationToken) {
    let source = Arc::new(source);
    let flusher = {
        let source = source.clone();
        let stop = stop.clone();
        tokio::spawn(async move { source.store.flush_until(stop).await })
    };
    let followers = Followers::default();
    let streams = TaskTracker::new();
    let mut backoff = FIRST_BACKOFF;
    let mut connected_before = false;
    while !stop.is_cancelled() {
        let error = match connect(&source).await {
            Ok((api, host)) => {
                if connected_before {
                    metrics::DOCKER_RECONNECTS.counter().increment(1);
                    tracing::info!(endpoint = %source.settings.endpoint, "connected to the Docker Engine API again; resuming every container from its checkpoint");
                } else {
                    tracing::info!(endpoint = %source.settings.endpoint, host = %host, "connected to the Docker Engine API");
                }
                connected_before = true;
                backoff = FIRST_BACKOFF;
                let context = Arc::new(Context {
                    source: source.clone(),
                    api,
                    host,
                    followers: followers.clone(),
                    streams: streams.clone(),
                    stop: stop.clone(),
                });
                match follow_events(&context).await {
                    Some(error) => error,
                    None => break,
                }
            }
            Err(error) => error,
        };
        if stop.is_cancelled() {
            break;
        }
        source.health.set_down(error.to_string());
        crate::warn_limited!(endpoint = %source.settings.endpoint, %error, "the Docker Engine API is not answering; connecting again");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    streams.close();
    streams.wait().await;
    let _ = flusher.await;
    source.store.flush();
}

async fn connect(source: &DockerSource) -> Result<(Api, String), ApiError> {
    let api = Api::connect(&source.settings.endpoint).await?;
    let host = api.host_name().await?;
    Ok((api, host))
}

/// What every stream of one connection shares.
struct Context {
    source: Arc<DockerSource>,
    api: Api,
    host: String,
    followers: Followers,
    streams: TaskTracker,
    stop: CancellationToken,
}

/// Lists the containers and follows the events until the API goes away
/// (the error) or `stop` (`None`).
async fn follow_events(context: &Arc<Context>) -> Option<ApiError> {
    let source = &context.source;
    // Subscribed before listing: a container started in between is in
    // one or the other (or both: one stream per container all the same).
    let mut events = Box::pin(context.api.events());
    let listed = match context.api.containers().await {
        Ok(listed) => listed,
        Err(error) => return Some(error),
    };
    source.health.set_up();
    let present: HashSet<String> = listed.iter().map(|c| c.id.clone()).collect();
    source.store.retain(&present);
    for container in &listed {
        // A stopped container is read only for what it printed after its
        // checkpoint (it stopped while cowlogd was away).
        if container.running || source.store.get(&container.id).is_some() {
            start_stream(context, &container.id);
        }
    }
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = context.stop.cancelled() => return None,
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(error)) => return Some(error.into()),
            None => {
                return Some(ApiError::Connect {
                    endpoint: source.settings.endpoint.to_string(),
                    error: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
        };
        let Some(actor) = event.actor else { continue };
        let Some(id) = actor.id else { continue };
        match event.action.as_deref() {
            Some("start") => start_stream(context, &id),
            // The stream is inspected again: its lines carry the new name.
            Some("rename") => context.followers.renamed(&id),
            Some("destroy") if !context.followers.forget_when_done(&id) => {
                source.store.forget(&id);
            }
            // A stream ends by itself once the container's last lines are
            // read.
            _ => {}
        }
    }
}

/// The containers with a stream open: one at a time per container; a start
/// while one is open runs it again once it ends.
#[derive(Clone, Default)]
struct Followers(Arc<Mutex<HashMap<String, Follower>>>);

struct Follower {
    again: bool,
    forget: bool,
    renamed: watch::Sender<()>,
}

impl Followers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Follower>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Some(rename notices)` when no stream was open for `id` (the caller
    /// opens one), else marks it to run again.
    fn claim(&self, id: &str) -> Option<watch::Receiver<()>> {
        let mut followers = self.lock();
        if let Some(follower) = followers.get_mut(id) {
            follower.again = true;
            return None;
        }
        let (tell_renamed, renamed) = watch::channel(());
        followers.insert(
            id.to_owned(),
            Follower {
                again: false,
                forget: false,
                renamed: tell_renamed,
            },
        );
        Some(renamed)
    }

    /// The stream ended: `Some(forget)` to stop, `None` to run again.
    fn release(&self, id: &str) -> Option<bool> {
        let mut followers = self.lock();
        let follower = followers.get_mut(id)?;
        if follower.again {
            follower.again = false;
            return None;
        }
        followers.remove(id).map(|f| f.forget)
    }

    fn renamed(&self, id: &str) {
        if let Some(follower) = self.lock().get(id) {
            follower.renamed.send_replace(());
        }
    }

    /// `true` when a stream is open (it forgets the checkpoint when done).
    fn forget_when_done(&self, id: &str) -> bool {
        match self.lock().get_mut(id) {
            Some(follower) => {
                follower.forget = true;
                follower.again = false;
                true
            }
            None => false,
        }
    }
}

fn start_stream(context: &Arc<Context>, id: &str) {
    let Some(renamed) = context.followers.claim(id) else {
        return;
    };
    let context = context.clone();
    let id = id.to_owned();
    let streams = context.streams.clone();
    streams.spawn(async move {
        let _open = OpenStream::open();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let ended = read_container(&context, &id, renamed.clone()).await;
            if context.stop.is_cancelled() {
                return;
            }
            if let Err(error) = ended {
                // Cut short (the API went away, a proxy's timeout): again
                // from the checkpoint, while the container is there.
                crate::warn_limited!(container = %&id[..id.len().min(12)], %error, "a container's log stream ended early; reading it again from its checkpoint");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = context.stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            backoff = FIRST_BACKOFF;
            match context.followers.release(&id) {
                None => continue,
                Some(forget) => {
                    if forget {
                        context.source.store.forget(&id);
                    }
                    return;
                }
            }
        }
    });
}

/// Why a container's stream is read again from its checkpoint.
#[derive(Debug, thiserror::Error)]
enum Again {
    /// The API went away or refused (or a proxy cut the stream).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Lines were not kept (the memory queue pushed them out).
    #[error("lines not kept (the memory queue was full)")]
    NotKept,
}

/// A container's logs from its checkpoint to the stream's end, inspected
/// again after a rename.
async fn read_container(
    context: &Context,
    id: &str,
    mut renamed: watch::Receiver<()>,
) -> Result<(), Again> {
    let source = &context.source;
    loop {
        let Some(meta) = context.api.inspect(id).await? else {
            return Ok(());
        };
        renamed.mark_unchanged();
        if !source.selected(&meta) {
            return Ok(());
        }
        let from = source.store.get(id).unwrap_or_else(|| {
            cowlogd_parsers::docker_logs::Checkpoint::from_time(source.store.watching_since())
        });
        let body = context.api.logs(id, from.since()).await?;
        let stream = Stream {
            pipeline: &source.pipeline,
            store: &source.store,
            meta: &meta,
            host: &context.host,
            max_message: source.max_message,
            durable_queue: source.settings.durable_queue,
        };
        match stream.run(body, from, &context.stop, &mut renamed).await {
            Ended::Done | Ended::Stopped => return Ok(()),
            Ended::Lost(error) => return Err(Again::Api(error)),
            Ended::NotKept => return Err(Again::NotKept),
            Ended::Renamed => continue,
        }
    }
}

/// The id of the container this process runs in, from its mounts (Docker
/// bind-mounts `/etc/hostname` from `…/containers/<id>/hostname`).
fn own_container_id(mountinfo: &str) -> Option<&str> {
    mountinfo.lines().find_map(|line| {
        let at = line.find("/containers/")? + "/containers/".len();
        let id = line.get(at..at + 64)?;
        (id.bytes().all(|b| b.is_ascii_hexdigit()) && line[at + 64..].starts_with("/hostname"))
            .then_some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_container_is_found_from_the_hostname_mount() {
        let id = "4f1c0a6e2b7d9c3e8a5f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a";
        let mounts = format!(
            "1 0 0:1 / / rw - overlay overlay rw\n2 1 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(own_container_id(&mounts), Some(id));
        assert_eq!(
            own_container_id("1 0 0:1 / / rw - ext4 /dev/sda1 rw\n"),
            None
        );
    }

    #[test]
    fn include_and_exclude_match_the_name_or_the_compose_labels_and_exclude_wins() {
        use crate::router::ContainerGlob;
        let meta =
            |id: &str, name: &str, service: Option<&str>, project: Option<&str>| ContainerMeta {
                id: id.into(),
                name: name.into(),
                tty: false,
                service: service.map(Into::into),
                project: project.map(Into::into),
                image_name: String::new(),
                image_id: String::new(),
                command: String::new(),
                created: String::new(),
            };
        let postfix = meta(
            "a",
            "mailcowdockerized-postfix-mailcow-1",
            Some("postfix-mailcow"),
            Some("mailcowdockerized"),
        );
        let clamd = meta(
            "b",
            "mailcowdockerized-clamd-mailcow-1",
            Some("clamd-mailcow"),
            Some("mailcowdockerized"),
        );
        let loose = meta("c", "web", None, None);
        let settings = |include: &[&str], exclude: &[&str]| DockerSettings {
            endpoint: crate::config::DockerEndpoint::Unix("/var/run/docker.sock".into()),
            include: include.iter().map(|p| ContainerGlob::new(p)).collect(),
            exclude: exclude.iter().map(|p| ContainerGlob::new(p)).collect(),
            state_dir: None,
            durable_queue: false,
            exclude_self: true,
        };
        let all = settings(&[], &[]);
        assert!(
            [&postfix, &clamd, &loose]
                .iter()
                .all(|m| selected(&all, None, m))
        );
        // cowlogd's own container is left out.
        assert!(!selected(&all, Some("c"), &loose));
        // By compose service, by project, by name.
        let mail = settings(&["postfix-mailcow"], &[]);
        assert!(selected(&mail, None, &postfix) && !selected(&mail, None, &clamd));
        let project = settings(&["mailcow*"], &["clamd-*"]);
        assert!(selected(&project, None, &postfix));
        assert!(!selected(&project, None, &clamd), "exclude wins");
        assert!(!selected(&project, None, &loose));
        assert!(selected(&settings(&["w*"], &[]), None, &loose));
    }

    #[test]
    fn a_start_while_a_stream_is_open_runs_it_again_and_a_destroy_forgets_it() {
        let followers = Followers::default();
        assert!(followers.claim("a").is_some());
        assert!(followers.claim("a").is_none());
        assert_eq!(followers.release("a"), None, "runs again");
        assert_eq!(followers.release("a"), Some(false));
        assert!(followers.claim("a").is_some());
        assert!(followers.forget_when_done("a"));
        assert_eq!(followers.release("a"), Some(true));
        assert!(!followers.forget_when_done("a"));
    }
}
