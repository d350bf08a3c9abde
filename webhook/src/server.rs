//! HTTPS for the admission endpoint: rustls with the reloadable [`CertStore`], HTTP/1.1 and
//! HTTP/2 by ALPN, graceful draining on shutdown.

use crate::tls::CertStore;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
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
/// Connections held at once, and from one address: each costs a task, a socket and TLS buffers
/// (about 40 KiB idle), so they are part of the memory budget. The apiserver needs a few dozen
/// at most (HTTP/2 multiplexes reviews); a flood from a pod is closed at accept and
/// cannot take the apiserver's place, as it comes from another address.
pub const MAX_CONNECTIONS: usize = 256;
/// See [`MAX_CONNECTIONS`].
pub const MAX_CONNECTIONS_PER_PEER: usize = 64;
/// What one connection may buffer outside the review budget: an HTTP/1.1 head, HTTP/2's flow
/// control windows and header lists.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;
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
    let connections = Connections::default();
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
        let Some(held) = connections.admit(peer.ip()) else {
            tracing::debug!(%peer, "too many connections; closed at accept");
            continue;
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _held = held;
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
                .max_buf_size(MAX_CONNECTION_BUFFER)
                .header_read_timeout(IDLE_OR_HEADER_TIMEOUT);
            // One connection may not hold many turns at once (the apiserver sends few); a peer
            // that stops answering pings is dropped.
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
                // What a connection may buffer ahead of the handlers, which count bodies
                // against the review budget only as they read them.
                .initial_stream_window_size(MAX_CONNECTION_BUFFER as u32)
                .initial_connection_window_size(MAX_CONNECTION_BUFFER as u32)
                .max_header_list_size(MAX_CONNECTION_BUFFER as u32)
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

/// The connections held, in all and by peer address.
#[derive(Debug, Default, Clone)]
struct Connections(Arc<std::sync::Mutex<(usize, HashMap<IpAddr, usize>)>>);

/// One admitted connection; counted until dropped.
struct Held {
    connections: Connections,
    peer: IpAddr,
}

impl Connections {
    /// Counts a new connection from `peer`, or `None` past [`MAX_CONNECTIONS`] in all or
    /// [`MAX_CONNECTIONS_PER_PEER`] from that address.
    fn admit(&self, peer: IpAddr) -> Option<Held> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_peer) = &mut *counts;
        let from_peer = by_peer.entry(peer).or_default();
        if *total >= MAX_CONNECTIONS || *from_peer >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *from_peer += 1;
        *total += 1;
        Some(Held {
            connections: self.clone(),
            peer,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.connections.0.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_peer) = &mut *counts;
        *total -= 1;
        if let Some(from_peer) = by_peer.get_mut(&self.peer) {
            *from_peer -= 1;
            if *from_peer == 0 {
                by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_all_and_per_peer_and_counted_back() {
        let connections = Connections::default();
        let attacker: IpAddr = "10.0.0.9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let held: Vec<Held> = (0..MAX_CONNECTIONS_PER_PEER)
            .filter_map(|_| connections.admit(attacker))
            .collect();
        assert_eq!(held.len(), MAX_CONNECTIONS_PER_PEER);
        assert!(connections.admit(attacker).is_none(), "the peer's cap");
        let apiserver: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(
            connections.admit(apiserver).is_some(),
            "another peer gets in"
        );
        drop(held);
        assert!(
            connections.admit(attacker).is_some(),
            "counted back when closed"
        );
        let peers: Vec<Held> = (0..MAX_CONNECTIONS)
            .filter_map(|i| connections.admit(IpAddr::from([10, 1, (i / 256) as u8, i as u8])))
            .collect();
        assert_eq!(peers.len(), MAX_CONNECTIONS);
        assert!(connections.admit(apiserver).is_none(), "the total cap");
    }
}
