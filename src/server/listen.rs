//! The listeners: Flight SQL on tonic, HTTP on hyper (with axum's router),
//! both optionally over TLS (rustls with ring), both stopping gracefully:
//! after [`Running::stop`] they accept nothing new and running requests get
//! the shutdown timeout to finish.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tower::ServiceExt;

use super::error::ServerError;
use super::flight::OmegaFlightSql;
use super::guard::{GuardLayer, grpc_panic, http_panic};
use super::{ServeConfig, ServerState};
use crate::Omega;

/// A server that is listening.
pub struct Running {
    /// Where Flight SQL listens (the bound port when 0 was asked for).
    pub flight: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// The id of the task runtime this server started (its lease's name).
    pub runtime: String,
    /// Whether queries lose priority as they age (see [`super::lanes`]).
    pub query_aging: bool,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    scheduler: Option<JoinHandle<()>>,
    timeout: Duration,
}

impl Running {
    /// Stops accepting connections; running requests go on.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(s) = &self.scheduler {
            s.abort();
        }
    }

    /// Stops and waits for running requests, at most the shutdown timeout.
    /// True when everything finished in time.
    pub async fn shutdown(self) -> bool {
        self.stop();
        let all = futures::future::join_all(self.tasks);
        tokio::time::timeout(self.timeout, all).await.is_ok()
    }
}

/// Binds the configured listeners and serves `om` until stopped.
pub async fn serve(om: Omega, config: ServeConfig) -> Result<Running, ServerError> {
    if config.flight.is_none() && config.http.is_none() {
        return Err(ServerError::bad_request(
            "both listeners are off; give --flight ADDR or --http ADDR",
        ));
    }
    // the task runtime and the scheduler live as long as the server
    let runtime = om.start_runtime(config.runtime.clone()).await?;
    let scheduler = config.scheduler.then(|| {
        tokio::spawn(crate::runtime::Scheduler::new(runtime.runtime().clone()).run_forever())
    });
    let state = Arc::new(ServerState::new(om, &config)?);
    let tls = match &config.tls {
        Some((cert, key)) => Some(load_tls(cert, key)?),
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(tidy(state.clone(), stopped.clone())));
    let mut running = Running {
        flight: None,
        http: None,
        runtime: runtime.runtime().owner().to_string(),
        query_aging: state.lanes.aging(),
        stop,
        tasks: Vec::new(),
        scheduler,
        timeout: config.shutdown_timeout,
    };
    if let Some(addr) = config.flight {
        let listener = bind(addr).await?;
        running.flight = Some(local(&listener)?);
        tasks.push(tokio::spawn(serve_flight(
            state.clone(),
            listener,
            tls.clone(),
            stopped.clone(),
        )));
    }
    if let Some(addr) = config.http {
        let listener = bind(addr).await?;
        running.http = Some(local(&listener)?);
        let app = super::http::router(state.clone());
        tasks.push(tokio::spawn(serve_http(
            app,
            listener,
            tls.map(|t| TlsAcceptor::from(t.config)),
            stopped,
        )));
    }
    running.tasks = tasks;
    Ok(running)
}

/// How often a server retires unused query executors and gives the kernel
/// back the memory malloc holds free.
const TIDY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Every [`TIDY_EVERY`] until the server stops: shuts down the query
/// executors left unused for [`super::lanes::IDLE_KEEP_ALIVE`] (a burst of
/// queries leaves many), then, with glibc, hands the memory malloc holds
/// free back to the kernel. Under a long mixed load the
/// server's resident memory grew without end (127 to 338 MiB in 120 s)
/// while what it had allocated stayed under 60 MiB (heaptrack): the rest
/// was free memory kept in malloc's per-thread arenas, which give memory
/// back only from their top, and short-lived query buffers between
/// long-lived entries fragment them. `malloc_trim` releases the free pages
/// anywhere in every arena. mimalloc instead of glibc held far more
/// (1.4 to 2.2 GiB; BENCHMARKS.md, 2026-12-03).
async fn tidy(state: Arc<ServerState>, stopped: watch::Receiver<bool>) {
    let stop = wait_stop(stopped);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(TIDY_EVERY) => {}
        }
        state.lanes.retire_idle();
        // SAFETY: malloc_trim only returns free pages; it takes malloc's own locks
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::bad_request(format!("cannot listen on {addr}: {e}")))
}

fn local(listener: &TcpListener) -> Result<SocketAddr, ServerError> {
    listener
        .local_addr()
        .map_err(|e| ServerError::internal(format!("cannot read the bound address: {e}")))
}

async fn wait_stop(mut stopped: watch::Receiver<bool>) {
    while !*stopped.borrow() {
        if stopped.changed().await.is_err() {
            return;
        }
    }
}

/// The PEM files, read for both listeners.
#[derive(Clone)]
struct Tls {
    config: Arc<rustls::ServerConfig>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

fn load_tls(cert: &Path, key: &Path) -> Result<Tls, ServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &Path| {
        std::fs::read(p)
            .map_err(|e| ServerError::bad_request(format!("cannot read '{}': {e}", p.display())))
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ServerError::bad_request(format!(
                "'{}' is not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ServerError::bad_request(format!(
            "'{}' holds no certificate",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        ServerError::bad_request(format!("'{}' is not a PEM private key: {e}", key.display()))
    })?;
    // tonic's TLS asks for the process default, which rustls cannot pick
    // when the build has both ring and aws-lc-rs (object_store brings the
    // latter): choose ring for the process, once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, private))
        .map_err(|e| ServerError::bad_request(format!("invalid TLS certificate or key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        cert_pem,
        key_pem,
    })
}

async fn serve_flight(
    state: Arc<ServerState>,
    listener: TcpListener,
    tls: Option<Tls>,
    stopped: watch::Receiver<bool>,
) {
    let limit = state.limits.message_bytes;
    let service = FlightServiceServer::new(OmegaFlightSql::new(state))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        let identity = tonic::transport::Identity::from_pem(tls.cert_pem, tls.key_pem);
        builder =
            match builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity)) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "Flight SQL TLS setup failed");
                    return;
                }
            };
    }
    // Small request/response exchanges must not wait for Nagle + delayed ACK
    // (~40 ms each way).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let result = builder
        .layer(GuardLayer::new("flight", grpc_panic))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, wait_stop(stopped))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "Flight SQL listener stopped");
    }
}

async fn serve_http(
    app: axum::Router,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    stopped: watch::Receiver<bool>,
) {
    let app = tower::ServiceBuilder::new()
        .layer(GuardLayer::new("http", http_panic))
        .service(app);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let stop = wait_stop(stopped);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            // handlers learn the client's address as axum's `ConnectInfo`
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    // a body refused unread is drained, so the client hears why
                    let request =
                        request.map(|b| axum::body::Body::new(super::linger::Lingering::new(b)));
                    app.clone().oneshot(request)
                },
            );
            let builder = ConnBuilder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls_stream) => {
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}
