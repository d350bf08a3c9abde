//! What the two servers, ssi-csi and ssi-webhook, share: how they log, how they learn to stop,
//! and the admin endpoints a kubelet probe and Prometheus call. One copy, so that they cannot
//! drift apart (they had: two texts for "not ready", two names for the admin address variable).

pub mod admin;
pub mod flags;
pub mod kube_client;
pub mod logging;
pub mod shutdown;

use std::future::Future;
use std::pin::Pin;

/// The stop signal a server's `run` receives.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a server's `main` does around its `run`: logging set up as `log_format` says, a
/// warning for `SSI_*` variables that are not this component's (`env_prefix`), the signal
/// handlers registered (an error if they cannot be), and the error that ends the process logged
/// before it is returned.
pub async fn serve<F, Fut>(
    log_format: logging::LogFormat,
    env_prefix: &str,
    run: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    logging::init(log_format);
    let foreign = flags::foreign_variables(env_prefix, std::env::vars());
    if !foreign.is_empty() {
        tracing::warn!(
            variables = ?foreign,
            "these variables are not read by this component (its own start with {env_prefix}); renamed ones need the new name"
        );
    }
    let shutdown = shutdown::signal_handlers()
        .map_err(|e| anyhow::anyhow!("failed to register the signal handlers: {e}"))?;
    run(Box::pin(shutdown))
        .await
        .inspect_err(|e| tracing::error!(error = format!("{e:#}"), "exiting"))
}
