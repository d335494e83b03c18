//! The Docker Engine API, read only: `info`, `containers/json`,
//! `containers/{id}/json`, `events` through bollard, and
//! `containers/{id}/logs` as the raw response body. bollard's log stream
//! cuts a TTY container's output at newlines only, holding a line without
//! one however long it grows, and hides where Docker split a long line;
//! [`LogDemux`](cowlogd_parsers::docker_logs::LogDemux) reads the body
//! instead, holding at most one entry.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};

use cowlogd_parsers::Timestamp;
use futures_util::Stream;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::DockerEndpoint;

/// Seconds a request (not a stream) may take.
const REQUEST_TIMEOUT_SECS: u64 = 30;

/// What went wrong talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// bollard's error (connect, request, JSON).
    #[error(transparent)]
    Client(#[from] bollard::errors::Error),
    /// Connecting for a log stream.
    #[error("connecting to {endpoint}: {error}")]
    Connect {
        /// Where.
        endpoint: String,
        /// Why.
        error: std::io::Error,
    },
    /// The log stream's HTTP exchange.
    #[error("logs request: {0}")]
    Http(#[from] hyper::Error),
    /// A status other than 200 for a log stream.
    #[error("logs request answered {0}")]
    Status(hyper::StatusCode),
    /// A request the client could not build.
    #[error("logs request: {0}")]
    Request(#[from] hyper::http::Error),
    /// A log stream that cannot be followed past this point.
    #[error("log stream unreadable: {0}")]
    Unreadable(cowlogd_parsers::docker_logs::DemuxError),
}

impl ApiError {
    /// Whether the container is gone (404).
    pub fn is_not_found(&self) -> bool {
        match self {
            ApiError::Client(bollard::errors::Error::DockerResponseServerError {
                status_code,
                ..
            }) => *status_code == 404,
            ApiError::Status(status) => *status == hyper::StatusCode::NOT_FOUND,
            _ => false,
        }
    }
}

/// What a container's lines need from its inspection.
#[derive(Debug, Clone)]
pub struct ContainerMeta {
    /// The full id.
    pub id: String,
    /// The name without its leading `/`.
    pub name: String,
    /// Whether it has a TTY (its logs are then one raw stream).
    pub tty: bool,
    /// `com.docker.compose.service`.
    pub service: Option<String>,
    /// `com.docker.compose.project`.
    pub project: Option<String>,
    /// The image as the container was created from it (`busybox:1`).
    pub image_name: String,
    /// The image's id.
    pub image_id: String,
    /// The command line.
    pub command: String,
    /// When it was created, as Docker writes it.
    pub created: String,
}

/// A container as the list shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The full id.
    pub id: String,
    /// Whether it is running.
    pub running: bool,
}

/// One client of the API.
#[derive(Clone)]
pub struct Api {
    docker: Docker,
    endpoint: DockerEndpoint,
}

impl Api {
    /// A client for `endpoint`, at the API version the daemon and
    /// bollard both speak (Debian 12's dockerd 20.10 speaks 1.41).
    ///
    /// # Errors
    /// When the socket path does not exist or the daemon does not answer.
    pub async fn connect(endpoint: &DockerEndpoint) -> Result<Api, ApiError> {
        let docker = match endpoint {
            DockerEndpoint::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )?,
            DockerEndpoint::Tcp(address) => Docker::connect_with_http(
                &format!("http://{address}"),
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )?,
        };
        let docker = docker.negotiate_version().await?;
        Ok(Api {
            docker,
            endpoint: endpoint.clone(),
        })
    }

    /// The Docker host's name (the `host` of every record, as the gelf
    /// driver sends it).
    ///
    /// # Errors
    /// When the API does not answer.
    pub async fn host_name(&self) -> Result<String, ApiError> {
        let info = self.docker.info().await?;
        Ok(info.name.unwrap_or_default())
    }

    /// Every container, running or not.
    ///
    /// # Errors
    /// When the API does not answer.
    pub async fn containers(&self) -> Result<Vec<Listed>, ApiError> {
        let options = ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let listed = self.docker.list_containers(Some(options)).await?;
        Ok(listed
            .into_iter()
            .filter_map(|c| {
                let running = c
                    .state
                    .is_some_and(|s| s == bollard::models::ContainerSummaryStateEnum::RUNNING);
                Some(Listed { id: c.id?, running })
            })
            .collect())
    }

    /// What a container's lines need; `None` once it is gone.
    ///
    /// # Errors
    /// When the API does not answer.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerMeta>, ApiError> {
        let inspected = match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => inspected,
            Err(error) => {
                let error = ApiError::from(error);
                return if error.is_not_found() {
                    Ok(None)
                } else {
                    Err(error)
                };
            }
        };
        let config = inspected.config.unwrap_or_default();
        let mut labels = config.labels.unwrap_or_default();
        let name = inspected.name.unwrap_or_default();
        let command = [inspected.path.unwrap_or_default()]
            .into_iter()
            .chain(inspected.args.unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Some(ContainerMeta {
            id: inspected.id.unwrap_or_else(|| id.to_owned()),
            name: name.strip_prefix('/').unwrap_or(&name).to_owned(),
            tty: config.tty.unwrap_or(false),
            service: labels.remove("com.docker.compose.service"),
            project: labels.remove("com.docker.compose.project"),
            image_name: config.image.unwrap_or_default(),
            image_id: inspected.image.unwrap_or_default(),
            command,
            created: inspected.created.unwrap_or_default(),
        }))
    }

    /// Containers' start, die, destroy and rename events from now on.
    pub fn events(
        &self,
    ) -> impl Stream<Item = Result<EventMessage, bollard::errors::Error>> + use<> {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "event".to_owned(),
                ["start", "die", "destroy", "rename"]
                    .map(str::to_owned)
                    .to_vec(),
            ),
        ]);
        self.docker.events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }))
    }

    /// Container `id`'s logs from `since` on, followed until it stops.
    ///
    /// # Errors
    /// When the API cannot be reached or refuses.
    pub async fn logs(&self, id: &str, since: Timestamp) -> Result<Incoming, ApiError> {
        let uri = format!(
            "/containers/{id}/logs?follow=1&stdout=1&stderr=1&timestamps=1&since={}.{:09}",
            since.secs.max(0),
            since.nanos
        );
        let connect_error = |error| ApiError::Connect {
            endpoint: self.endpoint.to_string(),
            error,
        };
        match &self.endpoint {
            DockerEndpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_error)?;
                request_body(stream, &uri).await
            }
            DockerEndpoint::Tcp(address) => {
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(connect_error)?;
                request_body(stream, &uri).await
            }
        }
    }
}

/// One GET on its own connection; the response body as it comes.
async fn request_body<S>(stream: S, uri: &str) -> Result<Incoming, ApiError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection ends with the body (dropped or read to its end).
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::get(uri)
        .header(hyper::header::HOST, "docker")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        return Err(ApiError::Status(response.status()));
    }
    Ok(response.into_body())
}
