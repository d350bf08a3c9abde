//! `ssi-csi`: parses the flags and runs [`ssi_csi::run`] until a stop signal.

use clap::Parser;
use ssi_csi::config::Args;

fn main() -> anyhow::Result<()> {
    // A template's rendering child: nothing else of the driver starts in it.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == ssi_csi::template::CHILD_ARGUMENT)
    {
        ssi_csi::template::child_main();
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(ssi_runtime::serve(
            args.log_format,
            "SSI_CSI_",
            |shutdown| ssi_csi::run(args, shutdown),
        ))
}
