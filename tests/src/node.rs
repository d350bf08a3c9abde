//! The real node of DESIGN.md section 5: kubelet and kube-scheduler of the bed's release (built
//! from its Go modules by `tests/bed/provision.sh`), with containerd and runc, inside a network
//! namespace of the bed's own.
//!
//! Design choices:
//! - Isolation: a holder process (`unshare --net --mount --propagation slave`) owns a network
//!   namespace and a mount namespace; a veth pair gives the network a private /30 (the apiserver
//!   reaches kubelet there for logs), and nothing routes out of it. Host mounts propagate into the
//!   mount namespace (a CSI driver run on the host mounts volumes kubelet and containerd see),
//!   the node's never out. Inside, /run, /var/lib and /var/log are tmpfs of the node's own, as
//!   containerd, CNI and kubelet write there whatever their configuration says (network namespace
//!   pins, shim sockets, the CNI cache, the device manager's socket, container log links); the
//!   kubelet root is mounted shared (Bidirectional propagation needs it). Kubelet, containerd and
//!   the pods' shims enter with `nsenter --net --mount`.
//! - The bed's servers listen on the host's 127.0.0.1; inside the namespace a proxy listens on
//!   the same ports (thread-local `setns`, then plain copying) so kubeconfigs and store addresses
//!   read the same on both sides. Pods on the CNI bridge reach them at the bridge's gateway.
//! - Everything lives below the bed's directory or a cgroup named after it; `stop()` tears it
//!   down and fails if any process, mount, cgroup, the namespace, or a changed sysctl remains.
//! - Several nodes ([`NodeOptions::private_root`]): a DaemonSet has one kubelet root for every
//!   node, so each node's directory is then mounted, in its mount namespace, at one path common
//!   to all. Its mounts (pods' volumes, containers' root filesystems) die with the namespace.
//! - The runtime ([`Runtime`]): Debian's containerd 1.6, or containerd 2.x with its runc, built
//!   from their Go modules by provision.sh.

use crate::process::{Process, free_port, tool};
use crate::{TestBed, run};
use anyhow::{Context, bail, ensure};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The node's name as the apiserver knows it (a single node's; see [`NodeOptions::name`]).
pub const NODE_NAME: &str = "ssi-node";

/// The container runtime a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Debian 12's containerd 1.6 and runc 1.1 (packages).
    DebianContainerd16,
    /// containerd 2.x and the runc its release names, built from their Go modules.
    Containerd2,
}

impl Runtime {
    /// containerd's binary.
    fn containerd(self) -> crate::Result<PathBuf> {
        match self {
            Runtime::DebianContainerd16 => Ok(PathBuf::from("/usr/bin/containerd")),
            Runtime::Containerd2 => containerd2_tool("containerd"),
        }
    }

    /// The `ctr` that matches the runtime's API.
    fn ctr(self) -> crate::Result<PathBuf> {
        match self {
            Runtime::DebianContainerd16 => Ok(PathBuf::from("/usr/bin/ctr")),
            Runtime::Containerd2 => containerd2_tool("ctr"),
        }
    }
}

/// A tool of the containerd 2.x build (`$cache/containerd-2`, linked by provision.sh).
fn containerd2_tool(name: &str) -> crate::Result<PathBuf> {
    let path = crate::process::cache_dir().join("containerd-2").join(name);
    ensure!(
        path.is_file(),
        "{} is missing; run tests/bed/provision.sh",
        path.display()
    );
    Ok(path)
}

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The node's name as the apiserver knows it.
    pub name: String,
    /// The container runtime.
    pub runtime: Runtime,
    /// `Some(path)`: in its mount namespace, the node's directory is mounted at `path` (below the
    /// bed's directory, the same for every node), and kubelet's root is `path/kubelet`. `None`:
    /// kubelet's root is below the node's own directory, the same path on the host (one node).
    pub private_root: Option<PathBuf>,
    /// Whether this node also runs the cluster's kube-scheduler (one node of a cluster does).
    pub scheduler: bool,
    /// kubelet's `syncFrequency`: how often it re-syncs each pod (refreshing its Secret and
    /// ConfigMap volumes, republishing CSI volumes that ask for it). The bed's 10 s keeps tests
    /// short; kubelet's own default is 1 minute, which comparisons that depend on it use.
    pub sync_frequency: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            name: NODE_NAME.to_owned(),
            runtime: Runtime::DebianContainerd16,
            private_root: None,
            scheduler: true,
            sync_frequency: Duration::from_secs(10),
        }
    }
}

/// The `kubernetes` Service's ClusterIP: the first address of the bed's service range.
pub const KUBERNETES_SERVICE_IP: &str = "10.0.0.1";

/// Host sysctls kubelet would change at start; the bed's kubelet is built to leave them alone.
const WATCHED_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// The running node: kubelet, kube-scheduler and containerd in the bed's network namespace.
/// Dropping it tears everything down; [`Node::stop`] also checks that nothing remains.
#[derive(Debug)]
pub struct Node {
    dir: PathBuf,
    options: NodeOptions,
    /// The node's address inside its namespace (the apiserver talks to kubelet there).
    pub ip: String,
    /// The CNI bridge's gateway, where pods reach the proxied bed servers.
    pub pod_gateway: String,
    /// containerd's socket, for `ctr` and kubelet.
    pub containerd_socket: PathBuf,
    /// Kubelet's `--root-dir`, below the bed's directory (not /var/lib/kubelet): the CSI
    /// driver must be told. With a private root, the path as the node's processes see it.
    pub kubelet_root: PathBuf,
    cgroup_root: String,
    /// Host side of the veth pair; it vanishes with the namespace.
    veth: String,
    sysctls: Vec<(String, String)>,
    /// The node's mount namespace (`mnt:[inode]`), to check that nothing is left in it.
    mount_namespace: String,
    stop_proxies: Arc<AtomicBool>,
    kubelet: Option<Process>,
    scheduler: Option<Process>,
    containerd: Option<Process>,
    holder: Option<Process>,
}

fn read_sysctls() -> Vec<(String, String)> {
    WATCHED_SYSCTLS
        .iter()
        .map(|name| {
            let value = std::fs::read_to_string(format!("/proc/sys/{name}")).unwrap_or_default();
            ((*name).to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// Runs `f` on a thread that has entered the network namespace `netns`.
fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> crate::Result<T> {
    let file = std::fs::File::open(netns).with_context(|| format!("open {}", netns.display()))?;
    let thread = std::thread::spawn(move || -> crate::Result<T> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("setns into the node's network namespace")?;
        Ok(f()?)
    });
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the netns thread panicked"))?
}

/// Listens on `listen` inside the node's namespace and forwards each connection to
/// 127.0.0.1:`port` on the host, until `stop`.
fn proxy_port(
    netns: &Path,
    listen: SocketAddr,
    port: u16,
    stop: Arc<AtomicBool>,
) -> crate::Result<()> {
    let listener = in_netns(netns, move || {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })?;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((inbound, _)) => {
                    let _ = inbound.set_nonblocking(false);
                    let Ok(outbound) = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
                    else {
                        continue;
                    };
                    let (Ok(mut in_read), Ok(mut out_read)) =
                        (inbound.try_clone(), outbound.try_clone())
                    else {
                        continue;
                    };
                    let (mut in_write, mut out_write) = (inbound, outbound);
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut in_read, &mut out_write);
                        let _ = out_write.shutdown(std::net::Shutdown::Write);
                    });
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut out_read, &mut in_write);
                        let _ = in_write.shutdown(std::net::Shutdown::Write);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(())
}

pub(crate) fn port_of(url: &str) -> crate::Result<u16> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .with_context(|| format!("no port in {url}"))
}

impl Node {
    /// Brings the bed's single node up and waits until the apiserver reports it Ready.
    pub async fn start(bed: &TestBed) -> crate::Result<Node> {
        Node::start_with(bed, NodeOptions::default()).await
    }

    /// Brings a node up as `options` say and waits until the apiserver reports it Ready.
    pub async fn start_with(bed: &TestBed, options: NodeOptions) -> crate::Result<Node> {
        let dir = if options.name == NODE_NAME {
            bed.dir().join("node")
        } else {
            bed.dir().join("nodes").join(&options.name)
        };
        std::fs::create_dir_all(&dir)?;
        // A /30 of its own per bed, one no interface on this machine uses yet, so that parallel
        // beds never collide.
        let in_use = run(Command::new("ip").args(["-br", "addr"]))?;
        let subnet = (0..100)
            .map(|_| fastrand::u8(1..=250))
            .find(|n| !in_use.contains(&format!("10.213.{n}.")))
            .context("no free 10.213.x.0/30")?;
        let id = format!("{:x}", fastrand::u32(..));
        let cgroup_root = format!("/ssi-node-{id}");
        let mut node = Node {
            ip: format!("10.213.{subnet}.2"),
            pod_gateway: format!("10.214.{subnet}.1"),
            containerd_socket: dir.join("containerd/containerd.sock"),
            kubelet_root: match &options.private_root {
                Some(root) => root.join("kubelet"),
                None => dir.join("kubelet"),
            },
            options,
            cgroup_root,
            veth: format!("ssi{id}").chars().take(15).collect(),
            sysctls: read_sysctls(),
            mount_namespace: String::new(),
            stop_proxies: Arc::default(),
            kubelet: None,
            scheduler: None,
            containerd: None,
            holder: None,
            dir,
        };
        node.bring_up(bed, subnet).await?;
        Ok(node)
    }

    /// The node's name as the apiserver knows it.
    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// The cgroup below which kubelet puts the node's pods, in every hierarchy.
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// The node's container runtime.
    pub fn runtime(&self) -> Runtime {
        self.options.runtime
    }

    fn holder_proc(&self) -> crate::Result<PathBuf> {
        let holder = self.holder.as_ref().context("no namespace holder")?;
        Ok(PathBuf::from(format!("/proc/{}", holder.pid())))
    }

    fn netns(&self) -> crate::Result<PathBuf> {
        Ok(self.holder_proc()?.join("ns/net"))
    }

    /// `command` run inside the node's network namespace (and its mount namespace, if private).
    fn in_node(&self, program: &Path) -> crate::Result<Command> {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={}", self.netns()?.display()));
        command
            .arg(format!(
                "--mount={}",
                self.holder_proc()?.join("ns/mnt").display()
            ))
            .arg("--")
            .arg(program);
        Ok(command)
    }

    /// `path` as the node's processes see it, read from the host (through the namespace
    /// holder's root: the node's mounts are its own).
    pub fn host_view(&self, path: &Path) -> crate::Result<PathBuf> {
        Ok(self
            .holder_proc()?
            .join("root")
            .join(path.strip_prefix("/").unwrap_or(path)))
    }

    /// The mount table the node's processes see.
    fn mountinfo(&self) -> String {
        self.holder_proc()
            .and_then(|p| Ok(std::fs::read_to_string(p.join("mountinfo"))?))
            .unwrap_or_default()
    }

    async fn bring_up(&mut self, bed: &TestBed, subnet: u8) -> crate::Result<()> {
        let dir = self.dir.clone();
        if self.options.private_root.is_none() {
            // The kubelet root as a shared mount of the host's (below the node's directory, so
            // teardown unmounts it): what a CSI driver run on the host mounts below it then
            // propagates into the node's mount namespace. The host's / may be private.
            std::fs::create_dir_all(&self.kubelet_root)?;
            run(Command::new("mount")
                .arg("--bind")
                .arg(&self.kubelet_root)
                .arg(&self.kubelet_root))?;
            run(Command::new("mount")
                .arg("--make-shared")
                .arg(&self.kubelet_root))?;
        }
        let mut holder = Command::new("unshare");
        // Host mounts propagate in, the node's never out.
        holder.args([
            "--net",
            "--mount",
            "--propagation",
            "slave",
            "sleep",
            "infinity",
        ]);
        self.holder = Some(Process::spawn(
            "netns-holder",
            holder,
            &dir.join("holder.log"),
        )?);
        let holder_pid = self.holder.as_ref().map(Process::pid).unwrap_or_default();
        // unshare needs a moment before the namespace is the holder's own.
        let host_ns = std::fs::read_link("/proc/self/ns/net")?;
        crate::wait::until(
            Duration::from_secs(2),
            "the namespace holder's own network namespace",
            || {
                crate::wait::check(
                    std::fs::read_link(format!("/proc/{holder_pid}/ns/net"))
                        .is_ok_and(|ns| ns != host_ns),
                    String::new,
                )
            },
        )
        .await?;
        self.mount_namespace = std::fs::read_link(self.holder_proc()?.join("ns/mnt"))?
            .display()
            .to_string();
        self.node_mounts()?;
        let veth = self.veth.clone();
        let veth = veth.as_str();
        run(Command::new("ip").args([
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &holder_pid.to_string(),
        ]))?;
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("10.213.{subnet}.1/30"),
            "dev",
            veth,
        ]))?;
        run(Command::new("ip").args(["link", "set", veth, "up"]))?;
        let ip = Path::new("/usr/sbin/ip");
        run(self.in_node(ip)?.args(["link", "set", "lo", "up"]))?;
        run(self
            .in_node(ip)?
            .args(["addr", "add", &format!("{}/30", self.ip), "dev", "eth0"]))?;
        run(self.in_node(ip)?.args(["link", "set", "eth0", "up"]))?;

        // The bed's servers, reachable inside by the same 127.0.0.1 addresses.
        let netns = self.netns()?;
        let mut ports = vec![port_of(&bed.kube().url)?];
        if let Some(openbao) = bed.openbao_if_started() {
            ports.push(port_of(&openbao.addr)?);
        }
        for &port in &ports {
            let every_address = SocketAddr::from(([0, 0, 0, 0], port));
            proxy_port(&netns, every_address, port, self.stop_proxies.clone())?;
        }
        // What kube-proxy would do for the one Service pods need: `kubernetes` (the first address
        // of the service range, 10.0.0.1:443, in the apiserver's certificate) leads to the
        // apiserver, so in-cluster clients (our webhook and driver pods) work unchanged.
        run(self.in_node(ip)?.args([
            "addr",
            "add",
            &format!("{KUBERNETES_SERVICE_IP}/32"),
            "dev",
            "lo",
        ]))?;
        proxy_port(
            &netns,
            SocketAddr::new(KUBERNETES_SERVICE_IP.parse()?, 443),
            ports[0],
            self.stop_proxies.clone(),
        )?;
        // The apiserver calls webhooks at their pods' addresses (--enable-aggregator-routing):
        // the host routes the pod network through the veth, and the node forwards it.
        run(Command::new("ip").args([
            "route",
            "add",
            &format!("10.214.{subnet}.0/24"),
            "via",
            &self.ip,
            "dev",
            veth,
        ]))?;
        run(self
            .in_node(Path::new("/usr/sbin/sysctl"))?
            .args(["-qw", "net.ipv4.ip_forward=1"]))?;

        // containerd with everything of its own below the node's directory.
        let containerd_dir = dir.join("containerd");
        std::fs::create_dir_all(&containerd_dir)?;
        let cni_dir = dir.join("cni");
        std::fs::create_dir_all(&cni_dir)?;
        std::fs::write(
            cni_dir.join("10-bridge.conf"),
            serde_json::json!({"cniVersion": "0.4.0", "name": "ssi-node", "type": "bridge",
                "bridge": "cni0", "isGateway": true, "ipMasq": false,
                "ipam": {"type": "host-local", "subnet": format!("10.214.{subnet}.0/24"),
                         "dataDir": dir.join("cni-ipam").display().to_string(),
                         "routes": [{"dst": "0.0.0.0/0"}]}})
            .to_string(),
        )?;
        let config = self.containerd_config(&containerd_dir, &cni_dir)?;
        std::fs::write(containerd_dir.join("config.toml"), config)?;
        self.start_containerd().await?;
        let pause = crate::images::pause_image(&dir.join("images"))?;
        self.load_image(&pause)?;

        // Kubelet's cgroups live below a root named after this node, in every hierarchy.
        for hierarchy in cgroup_hierarchies() {
            std::fs::create_dir_all(hierarchy.join(self.cgroup_root.trim_start_matches('/')))?;
        }
        let kube = bed.kube();
        let kubeconfig = dir.join("kubelet.kubeconfig");
        std::fs::copy(&kube.kubeconfig, &kubeconfig)?;
        let kubelet_config = dir.join("kubelet-config.yaml");
        std::fs::write(
            &kubelet_config,
            format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
# The apiserver calls kubelet for logs without a client certificate; the node is reachable only
# from this machine through its veth.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
failSwapOn: false
makeIPTablesUtilChains: false
resolvConf: ""
clusterDomain: cluster.local
# Pods re-sync (and CSI volumes with requiresRepublish are republished) this often.
syncFrequency: {sync_frequency}s
fileCheckFrequency: 10s
serializeImagePulls: false
# The bed loads its images (pause included) without a registry: kubelet must never collect them.
# Its disk is the whole machine's, shared with builds and whatever else runs there: a CI run
# once saw DiskPressure (under 1 % free), the taint kept the guide's pod from being scheduled.
# Disk eviction is off, as kind turns it off for the same reason ("0%": never a threshold).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
# NB: these hosts run cgroup v1, which kubelet refuses from 1.35 on unless told otherwise.
failCgroupV1: false
containerRuntimeEndpoint: unix://{containerd_socket}
# The pods' logs in the node's own directory, not the host's /var/log/pods: nodes of parallel
# beds never see each other's, and nothing outside the bed is written.
podLogsDir: {pod_logs}
# Its default is /usr/libexec/kubernetes/kubelet-plugins/volume/exec on the host.
volumePluginDir: {volume_plugins}
"#,
                containerd_socket = self.containerd_socket.display(),
                pod_logs = dir.join("pod-logs").display(),
                volume_plugins = dir.join("volume-plugins").display(),
                ip = self.ip,
                healthz = free_port()?,
                cgroup_root = self.cgroup_root,
                sync_frequency = self.options.sync_frequency.as_secs(),
            ),
        )?;
        self.start_kubelet()?;

        if self.options.scheduler {
            let mut scheduler = Command::new(tool("kube-scheduler")?);
            scheduler
                .arg(format!("--kubeconfig={}", kube.kubeconfig.display()))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={}", free_port()?))
                .arg("--leader-elect=false")
                .arg("--v=1");
            self.scheduler = Some(Process::spawn(
                "kube-scheduler",
                scheduler,
                &dir.join("kube-scheduler.log"),
            )?);
        }

        let waiting = crate::wait::Waiting::new(Duration::from_secs(120), "the node to be Ready");
        loop {
            let ready = bed
                .kubectl()
                .args([
                    "get",
                    "node",
                    &self.options.name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .output()?;
            if String::from_utf8_lossy(&ready.stdout).trim() == "True" {
                return Ok(());
            }
            if let Some(kubelet) = self.kubelet.as_mut()
                && let Some(status) = kubelet.exited()
            {
                bail!("kubelet exited ({status}):\n{}", kubelet.log_tail(40));
            }
            let kubelet_log = self
                .kubelet
                .as_ref()
                .map(|k| k.log_tail(40))
                .unwrap_or_default();
            waiting.pause(&kubelet_log).await?;
        }
    }

    /// Starts containerd with the configuration bring_up wrote, and waits until it answers.
    async fn start_containerd(&mut self) -> crate::Result<()> {
        let mut containerd = self.in_node(&self.options.runtime.containerd()?)?;
        containerd
            .arg("--config")
            .arg(self.dir.join("containerd/config.toml"));
        self.containerd = Some(Process::spawn(
            "containerd",
            containerd,
            &self.dir.join("containerd.log"),
        )?);
        crate::wait::until(Duration::from_secs(10), "containerd to answer", || {
            let answered = self.ctr().is_ok_and(|mut ctr| {
                ctr.arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
            crate::wait::check(answered, String::new)
        })
        .await
    }

    /// Starts kubelet with the configuration bring_up wrote.
    fn start_kubelet(&mut self) -> crate::Result<()> {
        let dir = &self.dir;
        let mut kubelet = self.in_node(&tool("kubelet")?)?;
        kubelet
            .arg(format!(
                "--config={}",
                dir.join("kubelet-config.yaml").display()
            ))
            .arg(format!(
                "--kubeconfig={}",
                dir.join("kubelet.kubeconfig").display()
            ))
            .arg(format!("--root-dir={}", self.kubelet_root.display()))
            .arg(format!("--cert-dir={}", dir.join("kubelet-pki").display()))
            .arg(format!("--node-ip={}", self.ip))
            .arg(format!("--hostname-override={}", self.options.name))
            .arg("--v=2");
        self.kubelet = Some(Process::spawn(
            "kubelet",
            kubelet,
            &dir.join("kubelet.log"),
        )?);
        Ok(())
    }

    /// Reboots the node as a machine reboots: kubelet, containerd and every container die,
    /// what lives on tmpfs is gone (the pods' volumes and tokens, /run with containerd's and
    /// runc's state, the driver's token directory), what lives on disk stays (kubelet's root,
    /// containerd's images, the driver's state directory); then containerd and kubelet start
    /// again, and kubelet brings the node's pods back.
    pub async fn reboot(&mut self) -> crate::Result<()> {
        self.kubelet = None;
        let survivors = self.kill_containers();
        ensure!(
            survivors.is_empty(),
            "processes of {} survived its reboot: {survivors:?}",
            self.options.name
        );
        self.containerd = None;
        let containerd_dir = self.dir.join("containerd");
        let keep: Vec<PathBuf> = [
            Some(self.kubelet_root.clone()),
            self.options.private_root.clone(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let gone = |point: &Path| {
            !keep.iter().any(|k| k == point)
                && (point.starts_with(&self.kubelet_root)
                    || point.starts_with(&containerd_dir)
                    || point.starts_with("/run")
                    || self
                        .options
                        .private_root
                        .as_ref()
                        .is_some_and(|root| point.starts_with(root.join("run"))))
        };
        let mounted = |node: &Node| -> Vec<PathBuf> {
            node.mountinfo()
                .lines()
                .filter_map(|line| line.split(' ').nth(4))
                .map(PathBuf::from)
                .filter(|point| gone(point))
                .collect()
        };
        let mut points = mounted(self);
        points.sort();
        points.dedup();
        points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        if !points.is_empty() {
            // NB: a mount below one already gone may be gone with it: umount's complaints
            // about those change nothing.
            let _ = self
                .in_node(Path::new("/usr/bin/umount"))?
                .arg("-l")
                .args(&points)
                .output()?;
        }
        // Stacked mounts go one layer per umount: again until none is left.
        for _ in 0..5 {
            let left = mounted(self);
            if left.is_empty() {
                break;
            }
            let _ = self
                .in_node(Path::new("/usr/bin/umount"))?
                .arg("-l")
                .args(&left)
                .output()?;
        }
        let left = mounted(self);
        ensure!(
            left.is_empty(),
            "mounts of {} survived its reboot: {left:?}",
            self.options.name
        );
        // A reboot's fresh tmpfs, and containerd's and runc's state (tmpfs on a real node) gone.
        let mount = Path::new("/usr/bin/mount");
        run(self
            .in_node(mount)?
            .args(["-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"]))?;
        if let Some(private_root) = &self.options.private_root {
            run(self
                .in_node(mount)?
                .args(["-t", "tmpfs", "-o", "mode=0755,size=16m", "tmpfs"])
                .arg(private_root.join("run")))?;
        }
        for state in ["state", "runc"] {
            let _ = std::fs::remove_dir_all(containerd_dir.join(state));
        }
        self.start_containerd().await?;
        self.start_kubelet()?;
        Ok(())
    }

    /// The node's own mounts, in its mount namespace: tmpfs over /run, /var/lib and /var/log
    /// (see the module's comment), and the kubelet root shared, at the common path when there is
    /// one, with a tmpfs at `private_root/run` as a node's /run is (the driver keeps its store
    /// tokens across restarts only on a tmpfs).
    fn node_mounts(&self) -> crate::Result<()> {
        let mount = Path::new("/usr/bin/mount");
        for dir in ["/run", "/var/lib", "/var/log"] {
            run(self
                .in_node(mount)?
                .args(["-t", "tmpfs", "-o", "mode=0755", "tmpfs", dir]))?;
        }
        match &self.options.private_root {
            Some(private_root) => {
                let own = self.dir.join("root");
                std::fs::create_dir_all(own.join("run"))?;
                std::fs::create_dir_all(private_root)?;
                run(self
                    .in_node(mount)?
                    .arg("--bind")
                    .arg(&own)
                    .arg(private_root))?;
                run(self.in_node(mount)?.arg("--make-rshared").arg(private_root))?;
                run(self
                    .in_node(mount)?
                    .args(["-t", "tmpfs", "-o", "mode=0755,size=16m", "tmpfs"])
                    .arg(private_root.join("run")))?;
            }
            None => {
                // A slave of the host's shared mount (see bring_up), made shared in here too
                // for the pods' Bidirectional mounts.
                run(self
                    .in_node(mount)?
                    .arg("--make-rshared")
                    .arg(&self.kubelet_root))?;
            }
        }
        Ok(())
    }

    /// containerd's configuration: every path of its own below `containerd_dir` (or the node's
    /// directory), none of the host's configuration read.
    fn containerd_config(&self, containerd_dir: &Path, cni_dir: &Path) -> crate::Result<String> {
        let root = containerd_dir.join("root");
        let state = containerd_dir.join("state");
        let socket = self.containerd_socket.display();
        let runc_root = containerd_dir.join("runc");
        Ok(match self.options.runtime {
            Runtime::DebianContainerd16 => format!(
                r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "ssi-testbed/pause:1"
  # NB: root here lacks CAP_SYS_RESOURCE; without this runc fails with "can't get final
  # child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
      Root = "{runc}"
# Its default is /opt/containerd on the host.
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
                root = root.display(),
                state = state.display(),
                cni = cni_dir.display(),
                runc = runc_root.display(),
                opt = containerd_dir.join("opt").display(),
            ),
            // NB: containerd 2's defaults name host paths (/opt/containerd, /etc/cdi, NRI's
            // socket in /var/run/nri, /etc/containerd/conf.d): all moved below the node or off.
            Runtime::Containerd2 => format!(
                r#"version = 3
root = "{root}"
state = "{state}"
imports = []
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "ssi-testbed/pause:1"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  disable_apparmor = true
  cdi_spec_dirs = ["{own}/cdi"]
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni}"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    runtime_path = "{shim}"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      SystemdCgroup = false
      Root = "{runc_root}"
      BinaryName = "{runc}"
[plugins.'io.containerd.internal.v1.opt']
  path = "{own}/opt"
[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = "{own}/image-verifier"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
"#,
                root = root.display(),
                state = state.display(),
                own = containerd_dir.display(),
                cni = cni_dir.display(),
                shim = containerd2_tool("containerd-shim-runc-v2")?.display(),
                runc_root = runc_root.display(),
                runc = containerd2_tool("runc")?.display(),
            ),
        })
    }

    /// Deletes the Deployment `name` (waiting for its pods to go), then waits up to `within`
    /// until kubelet has unmounted every CSI volume of this node; `log` tells why if not.
    pub async fn delete_deployment(
        &self,
        bed: &TestBed,
        name: &str,
        namespace: &str,
        within: Duration,
        log: impl Fn() -> String,
    ) -> crate::Result<()> {
        run(bed
            .kubectl()
            .args(["delete", "deployment", name, "-n", namespace, "--wait=true"]))?;
        crate::wait::until(within, "the CSI volumes to be unmounted", || {
            crate::wait::check(self.csi_volumes_mounted() == 0, &log)
        })
        .await
    }

    /// How many CSI volumes are mounted in pods of this node's kubelet.
    pub fn csi_volumes_mounted(&self) -> usize {
        let pods = self.kubelet_root.join("pods");
        let pods = pods.to_string_lossy();
        self.mountinfo()
            .lines()
            .filter(|line| line.contains(&*pods) && line.contains("kubernetes.io~csi"))
            .count()
    }

    /// `ctr` against the node's containerd, in the Kubernetes namespace.
    pub fn ctr(&self) -> crate::Result<Command> {
        let mut command = Command::new(self.options.runtime.ctr()?);
        command
            .arg("--address")
            .arg(&self.containerd_socket)
            .args(["-n", "k8s.io"]);
        Ok(command)
    }

    /// Loads an image archive (OCI or docker) into the node's containerd.
    pub fn load_image(&self, archive: &Path) -> crate::Result<()> {
        run(self.ctr()?.args(["images", "import"]).arg(archive))?;
        Ok(())
    }

    /// Tears the node down and fails if anything is left behind.
    pub fn stop(mut self) -> crate::Result<()> {
        self.teardown();
        let mut left = Vec::new();
        let dir = self.dir.display().to_string();
        for pid in self.our_processes() {
            left.push(format!("process {pid}"));
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mountinfo.lines() {
            if let Some(point) = line.split(' ').nth(4)
                && point.starts_with(&dir)
            {
                left.push(format!("mount {point}"));
            }
        }
        for hierarchy in cgroup_hierarchies() {
            let path = hierarchy.join(self.cgroup_root.trim_start_matches('/'));
            if path.exists() {
                left.push(format!("cgroup {}", path.display()));
            }
        }
        if !self.mount_namespace.is_empty() && self.in_mount_namespace() {
            left.push(format!("processes in the node's {}", self.mount_namespace));
        }
        let now = read_sysctls();
        for (before, after) in self.sysctls.iter().zip(&now) {
            if before != after {
                left.push(format!(
                    "sysctl {} changed from {} to {}",
                    before.0, before.1, after.1
                ));
            }
        }
        // NB: the kernel destroys a namespace (and its veth) asynchronously.
        let veth = Path::new("/sys/class/net").join(&self.veth);
        for _ in 0..50 {
            if !veth.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if veth.exists() {
            left.push(format!("network interface {}", self.veth));
        }
        ensure!(left.is_empty(), "the node left things behind: {left:?}");
        Ok(())
    }

    /// Whether any process is still in the node's mount namespace (it, and every mount in it,
    /// lives as long as one does).
    fn in_mount_namespace(&self) -> bool {
        std::fs::read_dir("/proc")
            .map(|entries| {
                entries.flatten().any(|entry| {
                    std::fs::read_link(entry.path().join("ns/mnt"))
                        .is_ok_and(|ns| ns.display().to_string() == self.mount_namespace)
                })
            })
            .unwrap_or(false)
    }

    /// Processes that belong to the node: in its cgroups or talking to its containerd.
    fn our_processes(&self) -> Vec<i32> {
        let socket = self.containerd_socket.display().to_string();
        let mut pids = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cgroups = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cgroups.contains(&format!("{}/", self.cgroup_root)) || cmdline.contains(&socket) {
                pids.push(pid);
            }
        }
        pids
    }

    fn teardown(&mut self) {
        self.kubelet = None;
        self.scheduler = None;
        // NB: Node::stop reports what is left.
        let _ = self.kill_containers();
        self.containerd = None;
        self.release();
    }

    /// Kills every container of the node, and their shims; returns the processes that are left
    /// after 5 s.
    fn kill_containers(&mut self) -> Vec<i32> {
        // Stopped through containerd first, the shims exit and remove their sockets.
        if let Ok(mut list) = self.ctr().map(|mut c| {
            c.args(["tasks", "ls", "-q"]);
            c
        }) && let Ok(output) = list.output()
        {
            for task in String::from_utf8_lossy(&output.stdout).lines() {
                if let Ok(mut kill) = self.ctr() {
                    let _ = kill
                        .args(["tasks", "kill", "-a", "-s", "SIGKILL", task])
                        .output();
                }
                if let Ok(mut delete) = self.ctr() {
                    let _ = delete.args(["tasks", "delete", "-f", task]).output();
                }
            }
        }
        // Whatever is left (containers and shims are not our children): find and kill it.
        for _ in 0..50 {
            let pids = self.our_processes();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.our_processes()
    }

    /// Unmounts what the node has below its directory on the host, removes its cgroups, stops
    /// its port proxies and lets its namespaces go.
    fn release(&mut self) {
        let dir = self.dir.display().to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
        for hierarchy in cgroup_hierarchies() {
            remove_cgroup_tree(&hierarchy.join(self.cgroup_root.trim_start_matches('/')));
        }
        self.stop_proxies.store(true, Ordering::Relaxed);
        // The namespace (and the veth with it) goes with its last process.
        self.holder = None;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Mount points of the cgroup v1 hierarchies (and the v2 root, if mounted).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes a cgroup and its children, deepest first (cgroupfs removes directories only empty).
fn remove_cgroup_tree(path: &Path) {
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(path);
}

/// The CSI drivers kubelet registered on the node, as its CSINode lists them (space-separated;
/// empty until kubelet has created the object).
pub fn registered_drivers(bed: &TestBed) -> String {
    registered_drivers_on(bed, NODE_NAME)
}

/// [`registered_drivers`] of the node `node`.
pub fn registered_drivers_on(bed: &TestBed, node: &str) -> String {
    run(bed.kubectl().args([
        "get",
        "csinode",
        node,
        "-o",
        "jsonpath={.spec.drivers[*].name}",
    ]))
    .unwrap_or_default()
}
