//! One container's log stream: from its checkpoint to the end (the
//! container stops, the API goes away, or cowlogd stops), each line the
//! record the gelf driver would give for it, each read cycle kept before
//! its checkpoint moves.

use std::borrow::Cow;
use std::sync::Arc;

use cowlogd_parsers::Timestamp;
use cowlogd_parsers::docker_logs::{
    Checkpoint, DOCKER_PART_BYTES, DemuxError, LineCursor, LogDemux, LogEntry, LogStream, Taken,
};
use cowlogd_parsers::gelf::{FieldValue, GelfField, GelfMessage};
use cowlogd_parsers::normalize::normalize_gelf;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use super::api::{ApiError, ContainerMeta};
use super::checkpoint::CheckpointStore;
use crate::metrics::{self, DropReason, INVALID_DOCKER_LOG, Input, dropped, parse_error};
use crate::pipeline::{Flush, Pipeline, Processor, ReadCycle};

/// Bytes of a multiplexed entry allowed: a 16 KiB part, its timestamp and
/// room for a daemon that writes larger ones.
const MAX_ENTRY: usize = 4 * DOCKER_PART_BYTES;
/// Bytes a line is joined to past `limits.max_message_bytes`: the pipeline
/// must still see it over the limit, to cut and mark it.
const LINE_ROOM: usize = 1024;

/// How a stream ended.
#[derive(Debug)]
pub enum Ended {
    /// The container stopped and every line was read.
    Done,
    /// cowlogd is stopping.
    Stopped,
    /// A read cycle was not kept (memory queue only: other inputs' traffic
    /// pushed it out before Redis applied it): the checkpoint stays before
    /// it, and the stream is read again from there.
    NotKept,
    /// The API went away (or refused) mid-way.
    Lost(ApiError),
    /// The container was renamed: read on under its new name.
    Renamed,
}

/// What one stream needs.
pub struct Stream<'a> {
    /// The pipeline lines go into.
    pub pipeline: &'a Arc<Pipeline>,
    /// Where positions are kept.
    pub store: &'a CheckpointStore,
    /// The container.
    pub meta: &'a ContainerMeta,
    /// The Docker host's name.
    pub host: &'a str,
    /// `limits.max_message_bytes`.
    pub max_message: usize,
    /// Whether the disk queue keeps the lines (checkpoints ride with them).
    pub durable_queue: bool,
}

impl Stream<'_> {
    /// Reads the container's logs from its checkpoint until the stream
    /// ends or `stop` fires.
    ///
    /// A rename ends it between read cycles, so that the lines after it
    /// carry the new name.
    pub async fn run(
        &self,
        body: hyper::body::Incoming,
        from: Checkpoint,
        stop: &CancellationToken,
        renamed: &mut tokio::sync::watch::Receiver<()>,
    ) -> Ended {
        let mut body = body;
        let meta = self.meta;
        let max_line = self.max_message.saturating_add(LINE_ROOM);
        let mut demux = LogDemux::new(!meta.tty, MAX_ENTRY);
        let mut lines = Lines {
            stdout: LineCursor::new(from.stdout, max_line),
            stderr: LineCursor::new(from.stderr, max_line),
            fields: gelf_fields(meta),
            host: self.host,
        };
        let mut processor = Processor::new(Input::Docker, self.pipeline.clone());
        processor.set_peer_host(self.host);
        let mut tokens: Vec<Vec<u8>> = Vec::with_capacity(1);
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                () = stop.cancelled() => return Ended::Stopped,
                Ok(()) = renamed.changed() => return Ended::Renamed,
            };
            let mut cycle = processor.begin();
            let at_end = match frame {
                Some(Ok(frame)) => {
                    let Ok(bytes) = frame.into_data() else {
                        continue; // trailers
                    };
                    cycle.count_bytes(bytes.len());
                    demux.push(&bytes);
                    let mut unreadable = None;
                    while let Some(entry) = demux.next_entry() {
                        if let Err(error) = lines.take(&mut cycle, entry) {
                            unreadable = Some(error);
                            break;
                        }
                    }
                    unreadable.map(|error| Err(ApiError::Unreadable(error)))
                }
                Some(Err(error)) => Some(Err(ApiError::Http(error))),
                None => Some(Ok(())),
            };
            if matches!(at_end, Some(Ok(()))) {
                // What a TTY container printed last without a newline, and
                // a line it stopped in the middle of. (A stream cut short
                // keeps its unfinished line for the next pass.)
                if let Some(entry) = demux.finish() {
                    let _ = lines.take(&mut cycle, entry);
                }
                lines.finish(&mut cycle);
            }
            let checkpoint = lines.checkpoint();
            tokens.clear();
            if self.durable_queue
                && let Some(token) = checkpoint.to_token(&meta.id)
            {
                tokens.push(token);
            }
            if !cycle.finish(Flush::UntilKept(stop, &tokens)).await {
                return if stop.is_cancelled() {
                    Ended::Stopped
                } else {
                    Ended::NotKept
                };
            }
            self.store.update(&meta.id, checkpoint);
            match at_end {
                None => {}
                Some(Ok(())) => return Ended::Done,
                Some(Err(error)) => return Ended::Lost(error),
            }
        }
    }
}

/// The container's two streams and what every record of it carries.
struct Lines<'m> {
    stdout: LineCursor,
    stderr: LineCursor,
    /// The gelf driver's additional fields for this container.
    fields: Vec<GelfField<'m>>,
    host: &'m str,
}

impl<'m> Lines<'m> {
    /// Takes one entry; `Err` when the stream cannot be followed past it.
    fn take(
        &mut self,
        cycle: &mut ReadCycle<'_>,
        entry: Result<LogEntry<'_>, DemuxError>,
    ) -> Result<(), DemuxError> {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                cycle.count_received();
                parse_error(Input::Docker, INVALID_DOCKER_LOG);
                dropped(DropReason::InvalidDockerLog, 1);
                crate::warn_limited!(%error, "Docker log stream entry not read");
                return if error.ends_stream() {
                    Err(error)
                } else {
                    Ok(())
                };
            }
        };
        let cursor = match entry.stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        };
        if let Taken::Line { time, text } = cursor.entry(entry.time, entry.text, entry.ends_line) {
            cycle.count_received();
            emit(cycle, &self.fields, self.host, entry.stream, time, text);
        }
        Ok(())
    }

    fn finish(&mut self, cycle: &mut ReadCycle<'_>) {
        for (stream, cursor) in [
            (LogStream::Stdout, &mut self.stdout),
            (LogStream::Stderr, &mut self.stderr),
        ] {
            if let Some(Taken::Line { time, text }) = cursor.finish() {
                cycle.count_received();
                emit(cycle, &self.fields, self.host, stream, time, text);
            }
        }
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            stdout: self.stdout.position(),
            stderr: self.stderr.position(),
        }
        .quiet_streams_caught_up(self.stdout.is_mid_line(), self.stderr.is_mid_line())
    }
}

/// One line as Docker's gelf driver would send it: `short_message` the line
/// (invalid UTF-8 as U+FFFD, as its JSON encoder writes it), `level` 6 for
/// stdout and 3 for stderr, Docker's timestamp, the container's fields.
fn emit(
    cycle: &mut ReadCycle<'_>,
    fields: &[GelfField<'_>],
    host: &str,
    stream: LogStream,
    time: Timestamp,
    text: &[u8],
) {
    let short_message = match std::str::from_utf8(text) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(text),
    };
    let message = GelfMessage {
        version: Some(Cow::Borrowed("1.1")),
        host: Some(Cow::Borrowed(host)),
        short_message,
        full_message: None,
        timestamp: Some(time),
        level: Some(match stream {
            LogStream::Stdout => 6,
            LogStream::Stderr => 3,
        }),
        fields: fields.to_vec(),
    };
    let record = normalize_gelf(&message, cycle.time(), cycle.now());
    cycle.record(&record);
}

/// The gelf driver's additional fields, plus the compose labels it adds
/// when asked (`labels=com.docker.compose.service,…`): the routes use them.
fn gelf_fields(meta: &ContainerMeta) -> Vec<GelfField<'_>> {
    let mut fields = vec![
        field("container_id", &meta.id),
        field("container_name", &meta.name),
        field("image_id", &meta.image_id),
        field("image_name", &meta.image_name),
        field("command", &meta.command),
        field("tag", meta.id.get(..12).unwrap_or(&meta.id)),
        field("created", &meta.created),
    ];
    if let Some(service) = &meta.service {
        fields.push(field("com.docker.compose.service", service));
    }
    if let Some(project) = &meta.project {
        fields.push(field("com.docker.compose.project", project));
    }
    fields
}

fn field<'m>(name: &'static str, value: &'m str) -> GelfField<'m> {
    GelfField {
        name: Cow::Borrowed(name),
        value: FieldValue::Str(Cow::Borrowed(value)),
    }
}

/// An open stream, counted in `cowlogd_docker_containers` while it lives.
pub struct OpenStream;

impl OpenStream {
    /// One more stream open.
    pub fn open() -> OpenStream {
        metrics::DOCKER_CONTAINERS.gauge().increment(1.0);
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::DOCKER_CONTAINERS.gauge().decrement(1.0);
    }
}
