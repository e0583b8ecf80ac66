//! A tower layer around both listeners: one structured log line per request
//! (`tracing`: protocol, method, path, status, milliseconds) and a panic in
//! a handler turned into an error response for that request (HTTP 500,
//! gRPC `INTERNAL`) instead of a dropped connection.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{Request, Response};
use futures::FutureExt;
use tower::{Layer, Service};

/// The layer; `on_panic` builds the response a panicking request gets.
pub struct GuardLayer<B> {
    protocol: &'static str,
    on_panic: fn() -> Response<B>,
}

impl<B> Clone for GuardLayer<B> {
    fn clone(&self) -> Self {
        Self {
            protocol: self.protocol,
            on_panic: self.on_panic,
        }
    }
}

impl<B> GuardLayer<B> {
    pub fn new(protocol: &'static str, on_panic: fn() -> Response<B>) -> Self {
        Self { protocol, on_panic }
    }
}

impl<S, B> Layer<S> for GuardLayer<B> {
    type Service = Guard<S, B>;
    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            protocol: self.protocol,
            on_panic: self.on_panic,
        }
    }
}

pub struct Guard<S, B> {
    inner: S,
    protocol: &'static str,
    on_panic: fn() -> Response<B>,
}

impl<S: Clone, B> Clone for Guard<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            protocol: self.protocol,
            on_panic: self.on_panic,
        }
    }
}

impl<S, ReqB, B> Service<Request<ReqB>> for Guard<S, B>
where
    S: Service<Request<ReqB>, Response = Response<B>> + Send,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let (protocol, on_panic) = (self.protocol, self.on_panic);
        let method = request.method().clone();
        // the path only: query strings may carry filters or names
        let path = request.uri().path().to_string();
        let start = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = AssertUnwindSafe(future).catch_unwind().await;
            // milliseconds to the microsecond: a log line, not a float's every digit
            let ms = (start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
            match result {
                Ok(Ok(response)) => {
                    let grpc = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info!(
                        protocol,
                        %method,
                        path,
                        status = response.status().as_u16(),
                        grpc,
                        ms,
                        "request"
                    );
                    Ok(response)
                }
                Ok(Err(e)) => {
                    tracing::warn!(protocol, %method, path, ms, "request failed");
                    Err(e)
                }
                Err(_) => {
                    tracing::error!(protocol, %method, path, ms, "request panicked");
                    Ok(on_panic())
                }
            }
        })
    }
}

/// HTTP: 500 with the JSON error body.
pub fn http_panic() -> Response<axum::body::Body> {
    use axum::response::IntoResponse;
    super::error::ServerError::internal("internal error while handling the request (logged)")
        .into_response()
}

/// gRPC: a trailers-only response with status INTERNAL.
pub fn grpc_panic() -> Response<tonic::body::Body> {
    tonic::Status::internal("internal error while handling the request (logged)").into_http()
}
