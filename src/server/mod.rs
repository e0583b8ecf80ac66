//! `om serve`: the store as a service.
//!
//! One process, two listeners over one [`Omega`](crate::Omega): Arrow Flight
//! SQL ([`flight`]) and an HTTP API ([`http`]). Every request authenticates
//! with an API key ([`auth`]; an address that keeps failing is stopped by
//! [`failed_auth`]); the key's bucket and role are the session's
//! identity, so the store's grants, row filters, masks and isolation are the
//! security boundary. Errors are classified once ([`error`]); prepared
//! statements and tickets are bounded and expire ([`expiring`]); [`guard`]
//! logs each request and turns a panic into an error for that request;
//! [`lanes`] runs each query on an executor of its own whose
//! priority drops as the query ages; [`listen`] runs the listeners (TLS, graceful shutdown;
//! [`linger`] drains bodies refused unread, so a client hears the 413) and the task
//! runtime with its scheduler; [`runtime_api`] is the HTTP face of tasks,
//! jobs and schedules.

pub mod auth;
pub mod encode;
pub mod error;
pub mod expiring;
pub mod failed_auth;
pub mod flight;
pub mod guard;
pub mod http;
pub mod lanes;
pub mod linger;
pub mod listen;
pub mod runtime_api;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::ScalarValue;
use datafusion::prelude::DataFrame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Omega;
use crate::runtime::RuntimeOptions;
use auth::Authenticator;
use error::{ErrorKind, ServerError};
use expiring::Expiring;
use lanes::Lanes;

pub use listen::{Running, serve};

/// Limits that keep one client from taking the server's memory.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest HTTP request body; larger ones get 413 before being read.
    pub body_bytes: u64,
    /// Largest gRPC message the Flight listener accepts or sends.
    pub message_bytes: usize,
    /// Target size of one Flight data message (batches are split to fit).
    pub flight_data_bytes: usize,
    /// Most rows an HTTP JSON or CSV answer returns (Arrow and Parquet
    /// stream without a limit); `None`: no limit.
    pub result_rows: Option<usize>,
    /// Requests executing at once; others wait for a worker. A query needs
    /// one only once it is past its first age ([`lanes`]): short queries
    /// start at once instead of queueing behind long ones.
    pub workers: usize,
    /// Open prepared statements and tickets kept at most (per kind).
    pub open_handles: usize,
    /// Idle prepared statements and unused tickets expire after this.
    pub handle_ttl: Duration,
    /// Failed authentications a client address may have per minute; past
    /// them it is refused (429 / `RESOURCE_EXHAUSTED`) for the rest of the
    /// minute, except with keys this server verified before.
    pub failed_auths: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 1 << 30,
            message_bytes: 256 << 20,
            flight_data_bytes: 2 << 20,
            result_rows: None,
            workers: 4 * cores(),
            open_handles: 10_000,
            handle_ttl: Duration::from_secs(600),
            failed_auths: 100,
        }
    }
}

/// The cores of this machine (at least 2).
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// What `om serve` was asked for.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Flight SQL address; `None`: off.
    pub flight: Option<SocketAddr>,
    /// HTTP address; `None`: off.
    pub http: Option<SocketAddr>,
    /// The role requests without credentials get (local use only).
    pub allow_anonymous: Option<String>,
    /// PEM certificate chain and private key: both listeners speak TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub limits: Limits,
    /// How long running requests may take to finish after SIGINT/SIGTERM.
    pub shutdown_timeout: Duration,
    /// The task runtime the server starts (workers, timeout, clock).
    pub runtime: RuntimeOptions,
    /// Whether this process runs the root's schedules (several may: each
    /// instant runs once).
    pub scheduler: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            flight: Some(SocketAddr::from(([127, 0, 0, 1], 50051))),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            allow_anonymous: None,
            tls: None,
            limits: Limits::default(),
            shutdown_timeout: Duration::from_secs(30),
            runtime: RuntimeOptions::default(),
            scheduler: true,
        }
    }
}

/// What every request handler shares.
pub struct ServerState {
    pub auth: Authenticator,
    pub limits: Limits,
    pub statements: Expiring<flight::Prepared>,
    pub tickets: Expiring<flight::Issued>,
    /// Where queries' batches are computed (see [`lanes`]).
    pub lanes: Arc<Lanes>,
    workers: Arc<Semaphore>,
}

impl ServerState {
    pub fn new(om: Omega, config: &ServeConfig) -> Result<Self, ServerError> {
        let limits = config.limits.clone();
        let workers = Arc::new(Semaphore::new(limits.workers.max(1)));
        Ok(Self {
            auth: Authenticator::new(om, config.allow_anonymous.as_deref(), limits.failed_auths)?,
            statements: Expiring::new("prepared statement", limits.handle_ttl, limits.open_handles),
            tickets: Expiring::new("ticket", limits.handle_ttl, limits.open_handles),
            workers: workers.clone(),
            lanes: Arc::new(Lanes::new(cores(), workers)),
            limits,
        })
    }

    /// Waits for a free worker; held for as long as the request executes.
    pub async fn worker(&self) -> Result<OwnedSemaphorePermit, ServerError> {
        self.workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ServerError::new(ErrorKind::Unavailable, "the server is shutting down"))
    }

    /// `sql` as `om`'s statement. A single query is planned here (planning
    /// is short) and runs when its stream is read, taking a worker itself
    /// once it ages. Any other statement runs while it is planned (a write,
    /// a script, a policy change): it takes a worker and runs on an executor
    /// of its own, aged like a query, so that it yields the cores to
    /// younger queries; its frame is the count it returns.
    pub async fn statement(
        &self,
        om: &Omega,
        sql: &str,
        params: &[ScalarValue],
    ) -> Result<DataFrame, ServerError> {
        if crate::sql::is_single_query(sql) {
            return Ok(om.sql_with_params(sql, params).await?);
        }
        let om = request_session(om, sql)?;
        let (sql, params) = (sql.to_string(), params.to_vec());
        self.write(async move { om.sql_with_params(&sql, &params).await })
            .await
    }

    /// Runs `work` (a write) with a worker, on an executor of its own,
    /// aged like a query (see [`lanes`]).
    pub async fn write<T: Send + 'static, E>(
        &self,
        work: impl Future<Output = Result<T, E>> + Send + 'static,
    ) -> Result<T, ServerError>
    where
        E: Send + 'static,
        ServerError: From<E>,
    {
        let _permit = self.worker().await?;
        Ok(self.lanes.run(work).await??)
    }
}

/// The session a script runs in: a private one, so that what it `SET`s or
/// `PREPARE`s lasts for the rest of the script and never reaches the other
/// requests of the same key, which share the key's cached session. A script
/// that ends by changing the session would change nothing: refused, saying
/// how to send it.
pub fn request_session(om: &Omega, sql: &str) -> Result<Omega, ServerError> {
    if crate::sql::ends_by_changing_session(sql) {
        return Err(ServerError::bad_request(
            "SET, RESET and PREPARE over om serve last only for the request they are sent in; \
             send them with the statements they should affect, as one script \
             (for example 'SET datafusion.execution.batch_size = 1024; SELECT ...')",
        ));
    }
    Ok(om.private_session()?)
}
