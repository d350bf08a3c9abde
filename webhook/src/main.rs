use clap::Parser;
use ssi_webhook::config::Args;

// Every review parses, clones and diffs a JSON object: hundreds of small allocations, made on one
// worker thread and often freed on another. mimalloc roughly halves their cost against glibc's
// malloc (see the README's benchmark table).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    ssi_webhook::init_logging(args.log_format);
    ssi_webhook::run(args, shutdown_signal())
        .await
        .inspect_err(|e| tracing::error!(error = format!("{e:#}"), "exiting"))
}

/// Completes on the first SIGTERM or SIGINT; a second one aborts at once.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down; a second signal aborts");
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        std::process::exit(130);
    });
}
