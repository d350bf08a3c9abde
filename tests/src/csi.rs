//! The CSI node driver as a real process, and a stand-in for kubelet that talks to it over its
//! socket exactly as kubelet does: a real Pod object, a TokenRequest bound to that pod for the
//! CSIDriver's audience, and kubelet's volume context keys.

use crate::process::{Process, free_port};
use crate::{KUBE_API_AUDIENCE, TestBed};
use anyhow::Context;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use ssi_csi::proto::{
    self, NodePublishVolumeRequest, NodeUnpublishVolumeRequest, VolumeCapability,
    identity_client::IdentityClient, node_client::NodeClient, volume_capability,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A workspace binary built next to the running test (`cargo build --workspace --bins`, which
/// `scripts/test` runs first).
pub fn workspace_binary(name: &str) -> crate::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // A test binary lives in target/<profile>/deps/, a bench binary in target/<profile>/; the
    // workspace binaries sit in target/<profile>/.
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    candidates.iter().find(|path| path.is_file()).cloned().with_context(|| {
        format!("{name} is missing next to {}; build it with `cargo build --workspace --bins` (scripts/test does)", exe.display())
    })
}

/// The binary the image ships (`target/images/bin/<name>`, release, static, stripped), for
/// the tests that measure what users run: memory figures of a debug build count its much larger
/// code.
pub fn shipped_binary(name: &str) -> crate::Result<PathBuf> {
    let path = crate::workspace_path(&format!("target/images/bin/{name}"));
    anyhow::ensure!(
        path.is_file(),
        "{} is missing; build it with scripts/build-images (scripts/test does)",
        path.display()
    );
    Ok(path)
}

/// How the driver under test is started.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// `--store-auth-path`: where the store's Kubernetes auth method is mounted.
    pub auth_path: String,
    /// `--rotation-interval`; short by default so that tests see a rotation soon.
    pub rotation_interval: String,
    /// `--store-timeout`: bound on each store request.
    pub store_timeout: String,
    /// Further flags, appended as given.
    pub extra_args: Vec<String>,
    /// A real kubelet's root directory: the driver's socket goes where that kubelet looks for
    /// it, and the driver registers itself through kubelet's plugin watcher.
    pub kubelet_root: Option<PathBuf>,
    /// Run the shipped binary ([`shipped_binary`]) rather than the debug build.
    pub shipped: bool,
    /// `--node-id`: the node this driver plays (two drivers on one bed play two nodes).
    pub node_id: String,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            auth_path: "main-kube".into(),
            rotation_interval: "2s".into(),
            store_timeout: "2s".into(),
            extra_args: Vec::new(),
            kubelet_root: None,
            shipped: false,
            node_id: "testbed-node".into(),
        }
    }
}

/// A running `ssi-csi` with its own socket, kubelet root and state dir inside the bed's dir.
#[derive(Debug)]
pub struct CsiDriver {
    process: Option<Process>,
    /// The CSI unix socket.
    pub socket: PathBuf,
    /// The kubelet root the driver accepts target paths under.
    pub kubelet_root: PathBuf,
    /// Where the driver keeps its mount records across restarts.
    pub state_dir: PathBuf,
    /// `host:port` of `/healthz`, `/readyz` and `/metrics`; a new port on every start.
    pub admin: String,
    options: DriverOptions,
    store_address: String,
    kubeconfig: PathBuf,
    log_dir: PathBuf,
    starts: usize,
}

impl CsiDriver {
    /// Starts the driver against the bed's apiserver and OpenBao; returns once its Identity
    /// probe answers ready.
    pub async fn start(bed: &TestBed, options: DriverOptions) -> crate::Result<CsiDriver> {
        // Another node: its own kubelet root, socket and state, as on another machine.
        let root = match options.node_id.as_str() {
            "testbed-node" => bed.dir().join("csi"),
            other => bed.dir().join(format!("csi-{other}")),
        };
        let (kubelet_root, socket) = match &options.kubelet_root {
            Some(kubelet_root) => (
                kubelet_root.clone(),
                kubelet_root.join(format!("plugins/{}/csi.sock", ssi_core::DRIVER_NAME)),
            ),
            None => (root.join("kubelet"), root.join("plugin/csi.sock")),
        };
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&kubelet_root)?;
        // As the node's /run: a tmpfs, which the driver checks before it keeps tokens there.
        // The bed unmounts it at teardown, with everything mounted below its directory.
        let token_dir = root.join("run");
        if !token_dir.exists() {
            std::fs::create_dir_all(&token_dir)?;
            ssi_csi::mount::mount_tmpfs(&token_dir, "1m")?;
        }
        let mut driver = CsiDriver {
            process: None,
            socket,
            kubelet_root,
            state_dir: root.join("state"),
            admin: String::new(),
            options,
            store_address: bed.openbao().addr.clone(),
            kubeconfig: bed.kube().kubeconfig.clone(),
            log_dir: root,
            starts: 0,
        };
        driver.restart().await?;
        Ok(driver)
    }

    /// (Re)starts the process on the same socket, kubelet root and state dir.
    pub async fn restart(&mut self) -> crate::Result<()> {
        self.process = None;
        self.starts += 1;
        self.admin = format!("127.0.0.1:{}", free_port()?);
        let binary = if self.options.shipped {
            shipped_binary("ssi-csi")?
        } else {
            workspace_binary("ssi-csi")?
        };
        let mut command = Command::new(binary);
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,ssi_csi=debug")
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--node-id={}", self.options.node_id))
            .arg(format!("--kubelet-root={}", self.kubelet_root.display()))
            .arg(format!("--state-dir={}", self.state_dir.display()))
            .arg(format!(
                "--token-dir={}",
                self.log_dir.join("run/tokens").display()
            ))
            .arg(format!("--store-address={}", self.store_address))
            .arg(format!("--store-auth-path={}", self.options.auth_path))
            .arg(format!("--store-timeout={}", self.options.store_timeout))
            .arg(format!(
                "--rotation-interval={}",
                self.options.rotation_interval
            ))
            .arg(format!("--admin-addr={}", self.admin))
            .args(&self.options.extra_args);
        if self.options.kubelet_root.is_some() {
            command.arg(format!(
                "--registration-socket={}",
                self.kubelet_root
                    .join(format!(
                        "plugins_registry/{}-reg.sock",
                        ssi_core::DRIVER_NAME
                    ))
                    .display()
            ));
        }
        let log = self.log_dir.join(format!("ssi-csi.{}.log", self.starts));
        let mut process = Process::spawn("ssi-csi", command, &log)?;
        crate::wait::process_ready(&mut process, Duration::from_secs(10), || async {
            match self.connect().await.map(IdentityClient::new) {
                Ok(mut identity) => identity
                    .probe(proto::ProbeRequest {})
                    .await
                    .is_ok_and(|r| r.into_inner().ready == Some(true)),
                Err(_) => false,
            }
        })
        .await?;
        self.process = Some(process);
        Ok(())
    }

    /// Unmounts every volume published below the kubelet root, for benchmarks that publish
    /// many and do not unpublish them one by one (the tmpfs mounts are the host's).
    pub fn unmount_volumes(&self) -> crate::Result<()> {
        for pod in std::fs::read_dir(self.kubelet_root.join("pods"))?.flatten() {
            ssi_csi::mount::unmount_all(
                &pod.path().join("volumes/kubernetes.io~csi/secrets/mount"),
            )?;
        }
        Ok(())
    }

    /// The driver's process id (for RSS readings).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Kills the driver outright (SIGKILL), as a node crash or OOM kill would.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// The last 200 lines of the driver's log, for failure messages.
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(200))
            .unwrap_or_default()
    }

    /// The whole log of the current process.
    pub fn log_path(&self) -> PathBuf {
        self.log_dir.join(format!("ssi-csi.{}.log", self.starts))
    }

    /// Waits (up to a minute) until the real kubelet has registered the driver: kubelet's plugin
    /// watcher found the registration socket, CSINode lists the driver, and kubelet told the
    /// driver (NotifyRegistrationStatus, which may come a moment after).
    pub async fn registered_by_kubelet(&self, bed: &TestBed) -> crate::Result<()> {
        crate::wait::until(
            Duration::from_secs(60),
            "kubelet to register the driver",
            || {
                let drivers = crate::node::registered_drivers(bed);
                crate::wait::check(
                    drivers.contains(ssi_core::DRIVER_NAME)
                        && self.log().contains("kubelet registered the driver"),
                    || format!("CSINode lists {drivers:?}:\n{}", self.log()),
                )
            },
        )
        .await
    }

    /// A gRPC channel over the driver's unix socket, as kubelet dials it.
    pub async fn connect(&self) -> crate::Result<Channel> {
        let socket = self.socket.clone();
        // The URI is a placeholder: the connector dials the unix socket.
        Ok(Endpoint::try_from("http://[::1]:1")?
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await?)
    }

    /// A client of the driver's CSI Node service.
    pub async fn node(&self) -> crate::Result<NodeClient<Channel>> {
        Ok(NodeClient::new(self.connect().await?))
    }

    /// The text of the driver's `/metrics`.
    pub async fn metrics(&self) -> crate::Result<String> {
        Ok(reqwest::get(format!("http://{}/metrics", self.admin))
            .await?
            .text()
            .await?)
    }

    /// The value of one metric line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> crate::Result<f64> {
        let text = self.metrics().await?;
        Ok(text
            .lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0))
    }
}

/// A pod as kubelet knows it when it publishes the pod's volume.
#[derive(Debug, Clone)]
pub struct PodVolume {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The Pod object's uid, which its token is bound to.
    pub uid: String,
    /// The pod's ServiceAccount, whose token the driver logs in with.
    pub service_account: String,
    /// The SecretsStoreImport the volume names.
    pub ssi: String,
    /// The volume id kubelet would give the inline volume.
    pub volume_id: String,
    /// The target path under the kubelet root, created up to its parent as kubelet does.
    pub target: PathBuf,
}

/// Creates the Pod object (it stays Pending: no node runs it) with a secrets-store CSI volume.
pub async fn create_pod(
    bed: &TestBed,
    driver: &CsiDriver,
    namespace: &str,
    name: &str,
    service_account: &str,
    ssi: &str,
) -> crate::Result<PodVolume> {
    let pods: Api<Pod> = Api::namespaced(bed.kube_client().await?, namespace);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": service_account,
            // The pod never runs: no API token mounted into it.
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "some/app:0.0.1",
                            "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets"}]}],
            "volumes": [{"name": "secrets", "csi": {"driver": ssi_core::DRIVER_NAME,
                                                     "volumeAttributes": {"secretsStoreImport": ssi}}}]
        }
    }))?;
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("create pod {namespace}/{name}"))?;
    let uid = pod.metadata.uid.context("pod has no uid")?;
    let target = driver.kubelet_root.join(format!(
        "pods/{uid}/volumes/kubernetes.io~csi/secrets/mount"
    ));
    std::fs::create_dir_all(target.parent().context("parent")?)?;
    Ok(PodVolume {
        namespace: namespace.into(),
        pod: name.into(),
        volume_id: format!("csi-{uid}-secrets"),
        uid,
        service_account: service_account.into(),
        ssi: ssi.into(),
        target,
    })
}

/// A token for the pod's ServiceAccount, bound to the pod, as kubelet requests it for an entry
/// of the CSIDriver's `tokenRequests` (an empty `audience`: the apiserver's own).
pub async fn pod_token(bed: &TestBed, volume: &PodVolume, audience: &str) -> crate::Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(bed.kube_client().await?, &volume.namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: if audience.is_empty() {
                Vec::new()
            } else {
                vec![audience.to_owned()]
            },
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(volume.pod.clone()),
                uid: Some(volume.uid.clone()),
            }),
        },
        ..Default::default()
    };
    let response = api
        .create_token_request(&volume.service_account, &PostParams::default(), &request)
        .await?;
    Ok(response.status.context("no token")?.token)
}

/// The NodePublishVolume request kubelet sends for the pod's inline volume, with the token of the
/// shipped CSIDriver (the apiserver's own audience).
pub async fn publish_request(
    bed: &TestBed,
    volume: &PodVolume,
) -> crate::Result<NodePublishVolumeRequest> {
    publish_request_with_audience(bed, volume, KUBE_API_AUDIENCE).await
}

/// The NodePublishVolume request of a CSIDriver whose `tokenRequests` names `audience`.
pub async fn publish_request_with_audience(
    bed: &TestBed,
    volume: &PodVolume,
    audience: &str,
) -> crate::Result<NodePublishVolumeRequest> {
    let token = pod_token(bed, volume, audience).await?;
    let tokens = serde_json::json!({audience: {"token": token, "expirationTimestamp": "2099-01-01T00:00:00Z"}});
    let context: HashMap<String, String> = [
        ("secretsStoreImport", volume.ssi.clone()),
        ("csi.storage.k8s.io/pod.name", volume.pod.clone()),
        ("csi.storage.k8s.io/pod.namespace", volume.namespace.clone()),
        ("csi.storage.k8s.io/pod.uid", volume.uid.clone()),
        (
            "csi.storage.k8s.io/serviceAccount.name",
            volume.service_account.clone(),
        ),
        ("csi.storage.k8s.io/ephemeral", "true".into()),
        (
            "csi.storage.k8s.io/serviceAccount.tokens",
            tokens.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Ok(NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: volume.target.display().to_string(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(Default::default())),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
            }),
        }),
        // The pod's csi volume says readOnly: true (the webhook sees to it); kubelet passes that on.
        readonly: true,
        volume_context: context,
        ..Default::default()
    })
}

/// [`publish`] with a token for `audience`, as kubelet sends one when the CSIDriver's
/// `tokenRequests` names it.
pub async fn publish_with_audience(
    bed: &TestBed,
    driver: &CsiDriver,
    volume: &PodVolume,
    audience: &str,
) -> Result<(), tonic::Status> {
    let request = publish_request_with_audience(bed, volume, audience)
        .await
        .map_err(|e| tonic::Status::internal(format!("{e:#}")))?;
    send_publish(driver, request).await
}

/// Sends the pod's NodePublishVolume (see [`publish_request`]) and returns the driver's status.
pub async fn publish(
    bed: &TestBed,
    driver: &CsiDriver,
    volume: &PodVolume,
) -> Result<(), tonic::Status> {
    let request = publish_request(bed, volume)
        .await
        .map_err(|e| tonic::Status::internal(format!("{e:#}")))?;
    send_publish(driver, request).await
}

/// Sends a NodePublishVolume a test prepared (or spoiled) itself.
pub async fn send_publish(
    driver: &CsiDriver,
    request: NodePublishVolumeRequest,
) -> Result<(), tonic::Status> {
    let mut node = driver
        .node()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
    node.node_publish_volume(request).await.map(|_| ())
}

/// Sends the NodeUnpublishVolume kubelet sends when the pod goes.
pub async fn unpublish(driver: &CsiDriver, volume: &PodVolume) -> Result<(), tonic::Status> {
    let mut node = driver
        .node()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
    node.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: volume.target.display().to_string(),
    })
    .await
    .map(|_| ())
}

/// The mount options of whatever is mounted at `path`, from /proc/self/mountinfo.
pub fn mount_of(path: &Path) -> Option<(String, String)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if Path::new(fields.get(4)?) != path {
            return None;
        }
        let dash = fields.iter().position(|f| *f == "-")?;
        Some((
            fields.get(dash + 1)?.to_string(),
            format!("{},{}", fields.get(5)?, fields.get(dash + 3)?),
        ))
    })
}
