//! HTTPS for the admission endpoint: rustls with the reloadable [`CertStore`], HTTP/1.1 and
//! HTTP/2 by ALPN, graceful draining on shutdown.

use crate::tls::CertStore;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A client gets this long for its TLS handshake: a connection that sends nothing (or a byte at a
/// time) is closed instead of holding a task and a socket.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Then this long for each request's headers, counted from the end of the previous answer (hyper
/// starts the clock while the connection waits, so this is also how long an idle connection is
/// kept). Longer than the 90 s the apiserver's client keeps an idle connection before reusing
/// or closing it: when the server closes first, a review sent just then fails with EOF, and
/// with `failurePolicy: Fail` so does the user's request.
const IDLE_OR_HEADER_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_STREAMS_PER_CONNECTION: u32 = 8;
/// HTTP/2 connections are pinged this often, and closed when a ping goes unanswered this long.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` over TLS on `listener` until `shutdown` completes, then waits for the requests
/// in flight. With `client_roots`, only clients with a certificate of those CAs get through the
/// handshake.
pub async fn serve_https(
    listener: TcpListener,
    app: Router,
    certs: Arc<CertStore>,
    client_roots: Option<Arc<rustls::RootCertStore>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), rustls::Error> {
    let acceptor = TlsAcceptor::from(Arc::new(certs.server_config(client_roots)?));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to accept a connection");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake took too long");
                    return;
                }
            };
            // The protocol is the one TLS agreed on (ALPN), so hyper does not wait, with no
            // clock running, for a first line to tell HTTP/1.1 from HTTP/2.
            let mut builder = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                Builder::new(TokioExecutor::new()).http2_only()
            } else {
                Builder::new(TokioExecutor::new()).http1_only()
            };
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(IDLE_OR_HEADER_TIMEOUT);
            // One connection may not hold many turns at once (the apiserver sends few); a peer
            // that stops answering pings is dropped.
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
                .keep_alive_interval(H2_PING_INTERVAL)
                .keep_alive_timeout(H2_PING_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}
