//! `ssi-csi`: parses the flags and runs [`ssi_csi::run`] until a stop signal.

use clap::Parser;
use ssi_csi::config::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    ssi_runtime::serve(args.log_format, "SSI_CSI_", |shutdown| {
        ssi_csi::run(args, shutdown)
    })
    .await
}
