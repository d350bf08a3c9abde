//! What the two servers, ssi-csi and ssi-webhook, share: how they log, how they learn to stop,
//! and the admin endpoints a kubelet probe and Prometheus call. One copy, so that they cannot
//! drift apart (they had: two texts for "not ready", two names for the admin address variable).

pub mod admin;
pub mod flags;
pub mod logging;
pub mod shutdown;

use std::future::Future;
use std::pin::Pin;

/// The stop signal a server's `run` receives.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a server's `main` does around its `run`: logging set up as `log_format` says, the
/// signal handlers registered (an error if they cannot be), and the error that ends the process
/// logged before it is returned.
pub async fn serve<F, Fut>(log_format: logging::LogFormat, run: F) -> anyhow::Result<()>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    logging::init(log_format);
    let shutdown = shutdown::signal_handlers()
        .map_err(|e| anyhow::anyhow!("failed to register the signal handlers: {e}"))?;
    run(Box::pin(shutdown))
        .await
        .inspect_err(|e| tracing::error!(error = format!("{e:#}"), "exiting"))
}
