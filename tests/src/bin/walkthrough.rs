//! The README's main job: the user's guide played step by step on a freshly started test bed,
//! then the secret mounted, rotated and injected by our components.
//! Exits non-zero at the first step that fails; the bed is torn down either way.

use ssi_tests::TestBed;
use ssi_tests::demo;
use ssi_tests::walkthrough::{self, Narrator, VaultSetup};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    println!(
        "Starting the test bed: etcd, kube-apiserver 1.20, kube-controller-manager, OpenBao (all on 127.0.0.1)"
    );
    let bed = TestBed::start().await?;
    println!(
        "  kube-apiserver {}   OpenBao {}",
        bed.kube().url,
        bed.openbao().addr
    );
    let mut narrator = Narrator::default();
    let played = async {
        walkthrough::run(&bed, VaultSetup::Cli, &mut narrator).await?;
        demo::mount_rotate_inject(&bed, &mut narrator).await
    };
    match played.await {
        Ok(()) => {
            println!(
                "\nDone: the guide's set-up works as written; the secret was mounted, rotated after the change in Vault, and injected into a pod's environment."
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("\nFAILED: {e:#}");
            drop(bed);
            std::process::exit(1);
        }
    }
}
