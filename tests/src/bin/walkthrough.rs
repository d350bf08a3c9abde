//! The README's main job: the user's guide played step by step on a freshly started test bed with
//! a real node, our components installed with the Helm chart, and the guide's workloads on it.
//! Exits non-zero at the first step that fails; the bed is torn down either way.

use ssi_tests::TestBed;
use ssi_tests::demo;
use ssi_tests::node::Node;
use ssi_tests::walkthrough::{self, Narrator, VaultSetup};
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "Starting the test bed: etcd, kube-apiserver, kube-controller-manager, OpenBao (all on 127.0.0.1)"
    );
    let bed = TestBed::start().await?;
    println!(
        "  kube-apiserver {} at {}   OpenBao {}",
        bed.kube_version()?,
        bed.kube().url,
        bed.openbao().addr
    );
    println!(
        "Starting the node: containerd, kubelet and kube-scheduler in a network namespace of their own"
    );
    let node = Node::start(&bed).await?;
    println!(
        "  node {} at {}, pods on {}/24",
        ssi_tests::node::NODE_NAME,
        node.ip,
        node.pod_gateway
    );

    let mut narrator = Narrator::default();
    let played = async {
        walkthrough::run(&bed, VaultSetup::Cli, &mut narrator).await?;
        demo::on_the_node(&bed, &node, &mut narrator).await
    };
    if let Err(e) = played.await {
        eprintln!("\nFAILED: {e:#}");
        demo::diagnose(&bed);
        drop(node);
        drop(bed);
        std::process::exit(1);
    }
    narrator.step("Stop the node and the test bed; check that nothing is left behind");
    if let Err(e) = node.stop() {
        eprintln!("\nFAILED: {e:#}");
        std::process::exit(1);
    }
    drop(bed);
    narrator.result("no process, mount, cgroup, network interface or file of the bed remains");
    println!(
        "\nDone in {:.0} s: the guide's set-up works as written; the secret was mounted, rotated in the running pod after the change in Vault, and injected into a pod's environment.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
