use clap::Parser;
use ssi_csi::config::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    ssi_runtime::logging::init(args.log_format);
    let shutdown = ssi_runtime::shutdown::signal_handlers()
        .map_err(|e| anyhow::anyhow!("failed to register the signal handlers: {e}"))?;
    ssi_csi::run(args, shutdown)
        .await
        .inspect_err(|e| tracing::error!(error = format!("{e:#}"), "exiting"))
}
