//! Two real nodes on the bed's one API server, as a cluster has them: `ssi-node-1` on Debian's
//! containerd 1.6, `ssi-node-2` on containerd 2.x with its runc (built from their Go modules),
//! each with a mount namespace of its own in which its kubelet root sits at one common path, so
//! that one install of the chart (one DaemonSet, one `csi.kubeletRoot`) serves both, as
//! /var/lib/kubelet does on a real cluster.
//!
//! Pods on both nodes reach the bed's store at 10.0.0.1 (the `kubernetes` Service's address, which
//! every node answers on the bed's ports: see node.rs), so the chart has one store address too.

use crate::chart::SYSTEM_NAMESPACE;
use crate::demo::helm;
use crate::node::{KUBERNETES_SERVICE_IP, Node, NodeOptions, Runtime, port_of};
use crate::{TestBed, run, wait};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

/// The cluster's nodes: their names and runtimes.
pub const NODES: [(&str, Runtime); 2] = [
    ("ssi-node-1", Runtime::DebianContainerd16),
    ("ssi-node-2", Runtime::Containerd2),
];

/// The running nodes. Dropping it tears them down; [`Cluster::stop`] also checks that nothing
/// remains.
#[derive(Debug)]
pub struct Cluster {
    /// In the order of [`NODES`].
    pub nodes: Vec<Node>,
    /// Where every node sees its own directory (below the bed's directory).
    root: PathBuf,
}

impl Cluster {
    /// Starts the nodes (the first also runs kube-scheduler) and waits until all are Ready.
    pub async fn start(bed: &TestBed) -> crate::Result<Cluster> {
        let root = bed.dir().join("node-root");
        let mut nodes = Vec::new();
        for (index, (name, runtime)) in NODES.into_iter().enumerate() {
            let options = NodeOptions {
                name: name.to_owned(),
                runtime,
                private_root: Some(root.clone()),
                scheduler: index == 0,
                ..NodeOptions::default()
            };
            nodes.push(
                Node::start_with(bed, options)
                    .await
                    .with_context(|| format!("node {name}"))?,
            );
        }
        Ok(Cluster { nodes, root })
    }

    /// Kubelet's root directory, the same path on every node.
    pub fn kubelet_root(&self) -> PathBuf {
        self.root.join("kubelet")
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> crate::Result<&Node> {
        self.nodes
            .iter()
            .find(|node| node.name() == name)
            .with_context(|| format!("no node {name} in the cluster"))
    }

    /// Loads the shipped images and busybox into every node's containerd.
    pub fn load_images(&self, bed: &TestBed) -> crate::Result<()> {
        let busybox = crate::images::busybox_image(&bed.dir().join("images"))?;
        for node in &self.nodes {
            for name in crate::demo::SHIPPED_IMAGES {
                node.load_image(&crate::images::shipped_image(name)?)?;
            }
            node.load_image(&busybox)?;
        }
        Ok(())
    }

    /// The chart's values for this cluster, as a user sets them: the store's address, the auth
    /// path, the rotation interval and the nodes' directories (one path on every node).
    pub fn chart_values(&self, bed: &TestBed, rotation: &str) -> crate::Result<Vec<String>> {
        let store = format!(
            "http://{KUBERNETES_SERVICE_IP}:{}",
            port_of(&bed.openbao().addr)?
        );
        let values = [
            crate::chart::LOCAL_IMAGES.to_owned(),
            format!("store.address={store}"),
            "store.authPath=main-kube".to_owned(),
            format!("csi.rotationInterval={rotation}"),
            format!("csi.kubeletRoot={}", self.kubelet_root().display()),
            format!("csi.stateDir={}", self.root.join("ssi-csi-state").display()),
            // A tmpfs, as a node's /run is (node.rs), so the driver keeps its tokens there.
            format!("csi.tokenDir={}", self.root.join("run/ssi-csi").display()),
        ];
        Ok(values
            .iter()
            .flat_map(|value| ["--set".to_owned(), value.clone()])
            .collect())
    }

    /// `helm install` of the chart on the cluster (`--atomic`: ready, or taken out again), then
    /// waits until every node's kubelet has registered the driver.
    pub async fn install_chart(&self, bed: &TestBed, rotation: &str) -> crate::Result<()> {
        run(bed
            .kubectl()
            .args(["create", "namespace", SYSTEM_NAMESPACE]))?;
        run(bed.kubectl().args([
            "label",
            "namespace",
            SYSTEM_NAMESPACE,
            "pod-security.kubernetes.io/enforce=privileged",
        ]))?;
        run(helm(bed)?
            .args(crate::chart::release_args("install"))
            .args(self.chart_values(bed, rotation)?))?;
        for node in &self.nodes {
            wait::until(
                Duration::from_secs(90),
                &format!("{}'s kubelet to register the driver", node.name()),
                || {
                    let drivers = crate::node::registered_drivers_on(bed, node.name());
                    wait::check(drivers.contains(ssi_core::DRIVER_NAME), || {
                        format!("drivers: {drivers:?}")
                    })
                },
            )
            .await?;
        }
        Ok(())
    }

    /// `helm upgrade` of the release with the cluster's values and `extra` `--set` pairs.
    pub fn upgrade_chart(
        &self,
        bed: &TestBed,
        rotation: &str,
        extra: &[&str],
    ) -> crate::Result<()> {
        let mut command = helm(bed)?;
        command
            .args(crate::chart::release_args("upgrade"))
            .args(self.chart_values(bed, rotation)?);
        for value in extra {
            command.args(["--set", value]);
        }
        run(&mut command)?;
        Ok(())
    }

    /// Tears every node down, then fails if any left something behind.
    pub fn stop(self) -> crate::Result<()> {
        let mut problems = Vec::new();
        for node in self.nodes.into_iter().rev() {
            let name = node.name().to_owned();
            if let Err(e) = node.stop() {
                problems.push(format!("{name}: {e:#}"));
            }
        }
        anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(())
    }
}
