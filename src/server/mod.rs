//! `profiledb serve`: an edge server that Customer.io's own SDKs write to unchanged.
//!
//! One origin serves every API at Customer.io's paths, so a client needs only its base
//! URL changed:
//!
//! | API | paths | auth |
//! |---|---|---|
//! | Track v1 | `/api/v1/customers/{id}` (PUT, DELETE), `.../events`, `.../devices[/{token}]`, `.../suppress`, `.../unsuppress`, `/api/v1/events`, `/api/v1/merge_customers`, `/api/v1/segments/{id}/add_customers`, `remove_customers`, `/api/v1/push/events` (and `/push/events`), `/api/v1/metrics`, `/api/v1/forms/{id}/submit`, `/api/v1/accounts/region` | Basic `site_id:api_key` |
//! | Track v2 | `/api/v2/entity`, `/api/v2/batch` | Basic `site_id:api_key` |
//! | Data Pipelines | `/v1/identify`, `track`, `page`, `screen`, `group`, `alias`, `batch` | Basic `write_key:` |
//! | Reporting webhooks | `/webhooks/reporting` | `X-CIO-Signature` with the webhook signing key, or Track's Basic auth |
//! | App API reads | `/v1/customers/...`, `/v1/segments/...` | `Bearer app_key` |
//! | health | `/healthz`, `/metrics` (Prometheus text) | none |
//!
//! # Answers
//! 200 with Customer.io's bodies (`{}` for Track writes). A refused request gets a 4xx
//! whose JSON body carries the library's refusal (the shape is in `reply.rs`). Over 32 KiB for one
//! message, or 500 KB for a batch, is 413; a wrong or missing key 401 (nothing is
//! written); an unknown person or segment on a read 404.
//!
//! # Durable acknowledgement (group commit)
//! Writes go through a bounded queue to one writer thread (`commit.rs`). The writer
//! takes everything queued, applies each request as one atomic unit with
//! [`Durability::Buffered`](crate::Durability::Buffered), then makes the whole group
//! durable with one [`ProfileDb::flush`], and only then answers every request in it.
//! So a 2xx means the write is on disk, and concurrent requests share one fsync pass.
//! A full queue answers 429 with `Retry-After`. Reads call the library directly and
//! never wait for a commit.
//!
//! # Shutdown
//! When the shutdown future completes (SIGTERM or ctrl-c for the binary), the server
//! stops accepting, lets in-flight requests finish (up to a grace period), drains the
//! queue, flushes and closes the database.

// An early answer is an axum `Response` (as axum's own extractors reject), built once
// per request; boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

mod app;
mod auth;
mod commit;
mod metrics;
mod reply;
mod track;
pub mod web;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::ProfileDb;

use metrics::Metrics;

/// Largest body of one message (Customer.io's limit per call and per batch item).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Largest body of a batch (Customer.io's limit per batch call).
pub const MAX_BATCH_BYTES: usize = 500 * 1000;

/// The keys clients authenticate with. `Debug` never prints them.
#[derive(Clone, Default)]
pub struct Keys {
    /// Track API site id (Basic auth user).
    pub site_id: Option<String>,
    /// Track API key (Basic auth password).
    pub api_key: Option<String>,
    /// Data Pipelines write key (Basic auth user, empty password).
    pub write_key: Option<String>,
    /// App API key (Bearer token).
    pub app_key: Option<String>,
    /// Reporting webhook signing key (`X-CIO-Signature`).
    pub webhook_key: Option<String>,
}

impl Keys {
    fn any(&self) -> bool {
        self.site_id.is_some()
            || self.api_key.is_some()
            || self.write_key.is_some()
            || self.app_key.is_some()
            || self.webhook_key.is_some()
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |k: &Option<String>| if k.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Keys")
            .field("site_id", &set(&self.site_id))
            .field("api_key", &set(&self.api_key))
            .field("write_key", &set(&self.write_key))
            .field("app_key", &set(&self.app_key))
            .field("webhook_key", &set(&self.webhook_key))
            .finish()
    }
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The keys; with none at all, `no_auth` must be set.
    pub keys: Keys,
    /// Accept every request without a key. Only allowed on a loopback address.
    pub no_auth: bool,
    /// Write requests that may wait for the writer; more get 429.
    pub queue_depth: usize,
    /// Most requests committed under one flush.
    pub max_group: usize,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
    /// Longest a request may take, body and commit included (then 408).
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// How long in-flight requests may run on after shutdown begins.
    pub grace: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            keys: Keys::default(),
            no_auth: false,
            queue_depth: 4096,
            max_group: 1024,
            max_connections: 1024,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(10),
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// No key was given and `no_auth` was not set.
    NoKeys,
    /// `no_auth` was set for an address that is not loopback.
    NoAuthNotLoopback(SocketAddr),
    /// One key of a pair was given without the other.
    HalfPair(&'static str),
    /// The listening socket failed.
    Io(std::io::Error),
    /// The database failed when it was closed.
    Db(crate::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::NoKeys => f.write_str(
                "no key given: set --site-id/--api-key, --write-key or --app-key (or \
                 PROFILEDB_SITE_ID, PROFILEDB_API_KEY, PROFILEDB_WRITE_KEY, \
                 PROFILEDB_APP_KEY), or pass --no-auth on a loopback address",
            ),
            ServeError::NoAuthNotLoopback(a) => write!(
                f,
                "--no-auth only binds a loopback address (127.0.0.1, ::1), not {a}"
            ),
            ServeError::HalfPair(what) => write!(f, "{what}"),
            ServeError::Io(e) => write!(f, "the listening socket failed: {e}"),
            ServeError::Db(e) => write!(f, "closing the database failed: {e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServeError::Io(e) => Some(e),
            ServeError::Db(e) => Some(e),
            _ => None,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) db: ProfileDb,
    pub(crate) writer: commit::Writer,
    pub(crate) keys: Arc<Keys>,
    pub(crate) no_auth: bool,
    pub(crate) metrics: Arc<Metrics>,
}

/// A bound server, ready to run.
pub struct Server {
    listener: std::net::TcpListener,
    db: ProfileDb,
    config: Config,
}

impl Server {
    /// Checks `config` and binds `addr` (port 0 picks a free port; see
    /// [`local_addr`](Server::local_addr)). `db` should be opened with
    /// [`Durability::Buffered`](crate::Durability::Buffered): the server makes each
    /// group of writes durable itself.
    ///
    /// # Errors
    /// [`ServeError::NoKeys`], [`ServeError::NoAuthNotLoopback`],
    /// [`ServeError::HalfPair`] for the configuration; [`ServeError::Io`] when binding
    /// fails.
    pub fn bind(db: ProfileDb, addr: SocketAddr, config: Config) -> Result<Server, ServeError> {
        let k = &config.keys;
        if k.site_id.is_some() != k.api_key.is_some() {
            return Err(ServeError::HalfPair(
                "the Track API needs both --site-id and --api-key",
            ));
        }
        if config.no_auth && !addr.ip().is_loopback() {
            return Err(ServeError::NoAuthNotLoopback(addr));
        }
        if !config.no_auth && !k.any() {
            return Err(ServeError::NoKeys);
        }
        let listener = std::net::TcpListener::bind(addr).map_err(ServeError::Io)?;
        listener.set_nonblocking(true).map_err(ServeError::Io)?;
        Ok(Server {
            listener,
            db,
            config,
        })
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// When the socket cannot say.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs on a new multi-threaded tokio runtime until `shutdown` completes, then
    /// drains, flushes and closes the database (when this was its last handle).
    ///
    /// # Errors
    /// [`ServeError::Io`] when the runtime or socket fails; [`ServeError::Db`] when the
    /// final flush or close fails.
    pub fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("profiledb-http")
            .build()
            .map_err(ServeError::Io)?;
        runtime.block_on(self.serve(shutdown))
    }

    /// As [`run`](Server::run), on the caller's tokio runtime.
    ///
    /// # Errors
    /// As [`run`](Server::run).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server {
            listener,
            db,
            config,
        } = self;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(ServeError::Io)?;
        let metrics = Arc::new(Metrics::default());
        let (writer, writer_thread) = commit::start(
            db.clone(),
            config.queue_depth,
            config.max_group,
            metrics.clone(),
        )
        .map_err(ServeError::Io)?;
        let state = AppState {
            db: db.clone(),
            writer: writer.clone(),
            keys: Arc::new(config.keys.clone()),
            no_auth: config.no_auth,
            metrics,
        };
        // The People page opens with the App API key, or without any key under
        // `--no-auth`; a server started with keys but no App API key keeps it closed.
        let web = match (config.no_auth, &config.keys.app_key) {
            (true, _) => Some(None),
            (false, Some(key)) => Some(Some(key.clone())),
            (false, None) => None,
        };
        let web = match web {
            Some(key) => {
                Some(web::WebState::new(Arc::new(db.clone()), key).map_err(ServeError::Io)?)
            }
            None => None,
        };
        let app = router(state, web, &config);
        accept_loop(listener, app, &config, shutdown).await;
        // Every connection is done (or was cut after the grace period): the writer
        // takes what is queued, commits and flushes it, and stops.
        let flushed = writer.stop().await;
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
        flushed.map_err(ServeError::Db)?;
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
            .map_err(ServeError::Db)
    }
}

/// Every route, with its limits, auth and layers.
fn router(state: AppState, web: Option<web::WebState>, config: &Config) -> Router {
    let one = DefaultBodyLimit::max(MAX_MESSAGE_BYTES);
    let many = DefaultBodyLimit::max(MAX_BATCH_BYTES);
    let track_api = Router::new()
        .route(
            "/api/v1/customers/{identifier}",
            put(track::identify).delete(track::delete),
        )
        .route("/api/v1/customers/{identifier}/events", post(track::event))
        .route("/api/v1/events", post(track::anonymous_event))
        .route(
            "/api/v1/customers/{identifier}/devices",
            put(track::add_device),
        )
        .route(
            "/api/v1/customers/{identifier}/devices/{token}",
            delete(track::delete_device),
        )
        .route(
            "/api/v1/customers/{identifier}/suppress",
            post(track::suppress),
        )
        .route(
            "/api/v1/customers/{identifier}/unsuppress",
            post(track::unsuppress),
        )
        .route("/api/v1/merge_customers", post(track::merge))
        .route("/api/v1/push/events", post(track::push_event))
        .route("/push/events", post(track::push_event))
        .route("/api/v1/metrics", post(track::metric))
        .route("/api/v1/forms/{form_id}/submit", post(track::form))
        .route("/api/v1/accounts/region", get(track::region))
        .route("/api/v2/entity", post(track::entity))
        .layer(one)
        .merge(
            Router::new()
                .route(
                    "/api/v1/segments/{segment}/add_customers",
                    post(track::add_customers),
                )
                .route(
                    "/api/v1/segments/{segment}/remove_customers",
                    post(track::remove_customers),
                )
                .route("/api/v2/batch", post(track::batch))
                .layer(many),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::track,
        ));
    let pipelines_api = Router::new()
        .route("/v1/identify", post(track::pipelines))
        .route("/v1/track", post(track::pipelines))
        .route("/v1/page", post(track::pipelines))
        .route("/v1/screen", post(track::pipelines))
        .route("/v1/group", post(track::pipelines))
        .route("/v1/alias", post(track::pipelines))
        .layer(one)
        .merge(
            Router::new()
                .route("/v1/batch", post(track::pipelines_batch))
                .layer(many),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::pipelines,
        ));
    let webhook = Router::new()
        .route("/webhooks/reporting", post(track::webhook))
        .layer(one)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::webhook,
        ));
    let app_api = Router::new()
        .route("/v1/customers", get(app::by_email).post(app::search))
        .route(
            "/v1/customers/{identifier}/attributes",
            get(app::attributes),
        )
        .route(
            "/v1/customers/{identifier}/activities",
            get(app::activities),
        )
        .route(
            "/v1/customers/{identifier}/segments",
            get(app::person_segments),
        )
        .route("/v1/customers/{identifier}/messages", get(app::messages))
        .route("/v1/segments", get(app::segments))
        .route("/v1/segments/{segment}", get(app::segment))
        .route(
            "/v1/segments/{segment}/customer_count",
            get(app::customer_count),
        )
        .route("/v1/segments/{segment}/membership", get(app::membership))
        .route(
            "/v1/segments/{segment}/add_customers",
            post(track::add_customers),
        )
        .route(
            "/v1/segments/{segment}/remove_customers",
            post(track::remove_customers),
        )
        .layer(many)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::app,
        ));
    let health = Router::new()
        .route("/healthz", get(app::healthz))
        .route("/metrics", get(app::metrics));
    let all = Router::new()
        .merge(track_api)
        .merge(pipelines_api)
        .merge(webhook)
        .merge(app_api)
        .merge(health);
    let all: Router = all.with_state(state.clone());
    // The People page (`/`, `/people/...`, `/segments`, `/objects/...`), before the
    // fallback and the layers, so it gets the same limits, timeouts and metrics.
    let all = match web {
        Some(web) => all.merge(web::router(web)),
        None => all.route("/", get(app::people_page_closed)),
    };
    all.fallback(reply::not_found)
        .layer(axum::middleware::from_fn_with_state(state, metrics::count))
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        // A bug that panics in a handler answers 500 instead of dropping the connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
}

/// Accepts connections (at most `max_connections` open) until `shutdown`, then waits up
/// to the grace period for open connections to finish.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(true);
    let service = hyper_util::service::TowerToHyperService::new(app);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: wait and carry on rather than stop.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), service.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(config.grace, graceful.shutdown()).await;
}

/// Completes on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
