//! The signal to stop: SIGTERM (kubelet, on pod deletion) or SIGINT (a person at a terminal).

use std::future::Future;
use tokio::signal::unix::{SignalKind, signal};

/// Registers the handlers now, so that a failure is an error at start rather than a server
/// that can never be stopped gracefully. The future completes on the first SIGTERM or SIGINT;
/// a second one exits at once (status 130).
pub fn signal_handlers() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutting down; a second signal aborts");
        tokio::spawn(async move {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            std::process::exit(130);
        });
    })
}
