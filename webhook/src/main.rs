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
    ssi_runtime::logging::init(args.log_format);
    let shutdown = ssi_runtime::shutdown::signal_handlers()
        .map_err(|e| anyhow::anyhow!("failed to register the signal handlers: {e}"))?;
    ssi_webhook::run(args, shutdown)
        .await
        .inspect_err(|e| tracing::error!(error = format!("{e:#}"), "exiting"))
}
