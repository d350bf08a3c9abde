//! `ssi-webhook`: parses the flags and runs [`ssi_webhook::run`] until a stop signal.

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
    ssi_runtime::serve(args.log_format, "SSI_WEBHOOK_", |shutdown| {
        ssi_webhook::run(args, shutdown)
    })
    .await
}
