//! The admin endpoints: `/healthz` (the process answers), `/readyz` (it serves), `/metrics`
//! (Prometheus text). Plain HTTP/1.1 on their own listener, meant for the node and the cluster's
//! monitoring only; a client gets [`HEADER_READ_TIMEOUT`] to send its request headers.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// A connection that sends no complete request head within this is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The Prometheus text format's content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What the endpoints report.
#[derive(Clone)]
pub struct Health {
    /// `/readyz` answers 200 while true, 503 otherwise.
    pub ready: Arc<AtomicBool>,
    /// The metrics text, made at each scrape.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The three routes.
pub fn router(health: Health) -> Router {
    let ready = health.ready.clone();
    let metrics = health.metrics.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
                        text,
                    )
                }
            }),
        )
}

/// Admin connections held at once: kubelet's probes and a Prometheus or two need a handful;
/// more are closed at accept, so a pod that floods the port costs a bounded amount of memory.
pub const MAX_ADMIN_CONNECTIONS: usize = 32;

/// The most an admin request's head may buffer: its requests are a line and a few headers.
const MAX_ADMIN_BUFFER: usize = 16 * 1024;

/// Serves the admin endpoints on `listener` for as long as the process lives: HTTP/1.1 only (no
/// cleartext HTTP/2, whose windows and streams a client could fill), at most
/// [`MAX_ADMIN_CONNECTIONS`] at once.
pub async fn serve(listener: TcpListener, health: Health) {
    let app = router(health);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin server: failed to accept a connection");
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "admin server: too many connections; closed at accept");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = Builder::new(TokioExecutor::new()).http1_only();
            builder
                .http1()
                .timer(TokioTimer::new())
                .max_buf_size(MAX_ADMIN_BUFFER)
                .header_read_timeout(HEADER_READ_TIMEOUT);
            if let Err(e) = builder.serve_connection(TokioIo::new(tcp), service).await {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(ready: bool) -> (String, Arc<AtomicBool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let ready = Arc::new(AtomicBool::new(ready));
        let health = Health {
            ready: ready.clone(),
            metrics: Arc::new(|| "ssi_up 1\n".to_owned()),
        };
        tokio::spawn(serve(listener, health));
        (address, ready)
    }

    /// One plain HTTP/1.1 GET, the way a kubelet probe sends it: (status line, body).
    async fn get(address: &str, path: &str) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn probes_and_metrics_answer() {
        let (address, ready) = start(false).await;
        let ok = "HTTP/1.1 200 OK".to_owned();
        assert_eq!(
            get(&address, "/healthz").await,
            (ok.clone(), "ok".to_owned())
        );
        assert_eq!(
            get(&address, "/readyz").await,
            (
                "HTTP/1.1 503 Service Unavailable".to_owned(),
                "not ready".to_owned()
            )
        );
        ready.store(true, Ordering::Relaxed);
        assert_eq!(
            get(&address, "/readyz").await,
            (ok.clone(), "ready".to_owned())
        );
        assert_eq!(
            get(&address, "/metrics").await,
            (ok, "ssi_up 1\n".to_owned())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_no_headers_is_cut_off() {
        let (address, _) = start(true).await;
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        // Paused time: the clock jumps to the next timer whenever everything waits.
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(HEADER_READ_TIMEOUT * 3, stream.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "the server kept a header-less connection open"
        );
        assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
    }
}
