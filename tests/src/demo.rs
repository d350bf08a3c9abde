//! The main job after the guide's set-up: our components installed from `manifests/` on the real
//! node, as a user installs them, and the guide's workloads running on it.
//!
//! The only changes to the shipped manifests are overlays a user of such a cluster would write
//! too (printed as the demo runs): the store's address, the demo's rotation interval, and the
//! node's kubelet directory, which is not /var/lib/kubelet on the test bed.

use crate::images::{ImageFile, build_image, busybox_image};
use crate::node::{NODE_NAME, Node, port_of};
use crate::walkthrough::{NAMESPACE, Narrator, PASSWORD, kubectl};
use crate::{TestBed, run, wait, workspace_path};
use anyhow::ensure;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The value the demo writes to Vault to show rotation.
pub const ROTATED: &str = "rotated-db-password";
/// The demo rotates every few seconds instead of the product's 2 minutes, so nobody waits.
const DEMO_ROTATION: &str = "5s";
const SYSTEM_NAMESPACE: &str = "secrets-store-integration";
/// The shipped images, as `scripts/build-images` leaves them.
const SHIPPED_IMAGES: [&str; 3] = ["ssi-csi", "ssi-webhook", "ssi-injector"];
/// The guide's Deployment runs image some/app:0.0.1; the demo's is the watch-secrets example.
const GUIDE_APP_IMAGE: &str = "some/app:0.0.1";

/// Runs the demo on `node`: installs the shipped images and manifests, shows the guide's
/// Deployment, a rotation, the subPath refusal and env injection, then uninstalls.
pub async fn on_the_node(bed: &TestBed, node: &Node, narrator: &mut Narrator) -> crate::Result<()> {
    load_images(bed, node, narrator)?;
    let overlays = install(bed, node, narrator).await?;
    guide_deployment(bed, narrator).await?;
    rotation(bed, narrator).await?;
    subpath_refused(bed, narrator)?;
    env_injection(bed, narrator).await?;
    uninstall(bed, narrator, &overlays)?;
    Ok(())
}

fn load_images(bed: &TestBed, node: &Node, narrator: &mut Narrator) -> crate::Result<()> {
    narrator.step("Load the images into the node's containerd (a registry pull would do the same)");
    for name in SHIPPED_IMAGES {
        let archive = workspace_path(&format!(
            "target/images/secrets-store-integration-{name}-0.1.0.tar"
        ));
        ensure!(
            archive.is_file(),
            "{} is missing; build the images with scripts/build-images (scripts/demo does)",
            archive.display()
        );
        node.load_image(&archive)?;
    }
    let app = workspace_path("target/x86_64-unknown-linux-gnu/release/watch-secrets");
    ensure!(
        app.is_file(),
        "{} is missing; build it with scripts/build-images (scripts/demo does)",
        app.display()
    );
    let images = bed.dir().join("images");
    node.load_image(&build_image(
        &images,
        GUIDE_APP_IMAGE,
        &[ImageFile::executable(&app, "/watch-secrets")],
        &[],
        &["/watch-secrets", "/mnt/secrets", "db-password"],
    )?)?;
    node.load_image(&busybox_image(&images)?)?;
    narrator.command("ctr -n k8s.io images ls -q");
    let listed = run(node.ctr()?.args(["images", "ls", "-q"]))?;
    let shown: Vec<&str> = listed
        .lines()
        .filter(|line| !line.starts_with("sha256:"))
        .collect();
    narrator.result(&shown.join("\n"));
    narrator.result(&format!(
        "({GUIDE_APP_IMAGE}, the image the guide's Deployment names, is examples/watch-secrets: it prints\n /mnt/secrets/db-password at start and again whenever an inotify watch on the directory fires)"
    ));
    Ok(())
}

/// The kustomize overlays the demo applied, to delete them at the end.
#[derive(Debug)]
pub struct Overlays {
    csi: PathBuf,
    webhook: PathBuf,
}

async fn install(bed: &TestBed, node: &Node, narrator: &mut Narrator) -> crate::Result<Overlays> {
    let deploy = bed.dir().join("deploy");
    std::fs::create_dir_all(&deploy)?;
    // Pods reach the bed's OpenBao through the node's pod gateway.
    let store = format!(
        "http://{}:{}",
        node.pod_gateway,
        port_of(&bed.openbao().addr)?
    );

    narrator.step("Install the CSI node driver: kubectl apply -k with an overlay of manifests/csi");
    let csi = deploy.join("csi");
    std::fs::create_dir_all(&csi)?;
    std::fs::write(
        csi.join("kustomization.yaml"),
        csi_overlay(
            &relative_to(&csi, &workspace_path("manifests/csi"))?,
            &store,
            node,
        ),
    )?;
    narrator.command(&format!("cat {}/kustomization.yaml", csi.display()));
    narrator.result(&std::fs::read_to_string(csi.join("kustomization.yaml"))?);
    let rendered = run(bed.kubectl().arg("kustomize").arg(&csi))?;
    ensure!(
        !rendered.contains("/var/lib/kubelet"),
        "the overlay left a /var/lib/kubelet path in the DaemonSet; manifests/csi/daemonset.yaml changed shape"
    );
    kubectl(bed, narrator, &["apply", "-k", &csi.display().to_string()])?;

    narrator
        .step("Install the webhook: certificates from certs/generate.sh, then kubectl apply -k");
    let certs = deploy.join("webhook-certs");
    narrator.command(&format!("certs/generate.sh --out {}", certs.display()));
    narrator.result(&run(Command::new(workspace_path("certs/generate.sh"))
        .arg("--out")
        .arg(&certs))?);
    let webhook = deploy.join("webhook");
    std::fs::create_dir_all(&webhook)?;
    std::fs::write(
        webhook.join("kustomization.yaml"),
        format!(
            r#"# The certificate overlay from certs/generate.sh, plus the store address for env-injected pods.
resources:
  - ../webhook-certs
configMapGenerator:
  - name: ssi-webhook-config
    namespace: {SYSTEM_NAMESPACE}
    behavior: merge
    literals:
      - SSI_WEBHOOK_INJECTOR_DEFAULT_ADDRESS={store}
"#
        ),
    )?;
    narrator.command(&format!("cat {}/kustomization.yaml", webhook.display()));
    narrator.result(&std::fs::read_to_string(
        webhook.join("kustomization.yaml"),
    )?);
    kubectl(
        bed,
        narrator,
        &["apply", "-k", &webhook.display().to_string()],
    )?;

    narrator.step("Wait for the driver (DaemonSet) and the webhook (2 replicas) to be ready");
    for workload in ["daemonset/ssi-csi", "deployment/ssi-webhook"] {
        kubectl(
            bed,
            narrator,
            &[
                "-n",
                SYSTEM_NAMESPACE,
                "rollout",
                "status",
                workload,
                "--timeout=180s",
            ],
        )?;
    }
    wait::until(
        Duration::from_secs(60),
        "kubelet to register the driver",
        || {
            let drivers = crate::node::registered_drivers(bed);
            wait::check(drivers.contains(ssi_core::DRIVER_NAME), || {
                format!("drivers: {drivers:?}")
            })
        },
    )
    .await?;
    kubectl(
        bed,
        narrator,
        &["-n", SYSTEM_NAMESPACE, "get", "pods", "-o", "wide"],
    )?;
    kubectl(
        bed,
        narrator,
        &[
            "get",
            "csinode",
            NODE_NAME,
            "-o",
            "jsonpath={.spec.drivers[*].name}{\"\\n\"}",
        ],
    )?;
    Ok(Overlays { csi, webhook })
}

/// manifests/csi for this node: the store address, the demo's rotation interval and the node's
/// kubelet directory (DaemonSet paths replaced one by one, each checked first with `test`).
fn csi_overlay(base: &Path, store: &str, node: &Node) -> String {
    let root = node.kubelet_root.display();
    let state = node.kubelet_root.with_file_name("ssi-csi-state");
    let state = state.display();
    let spec = "/spec/template/spec";
    let container = format!("{spec}/containers/0");
    let replace = |path: &str, old: &str, new: &str| {
        format!(
            "      - {{op: test, path: {path}, value: {old}}}\n      - {{op: replace, path: {path}, value: {new}}}\n"
        )
    };
    let kubelet = "/var/lib/kubelet";
    let plugin = format!("{kubelet}/plugins/secrets-store.csi.deckhouse.io");
    let moved = [
        (format!("{container}/env/2/value"), kubelet.to_owned()),
        (
            format!("{container}/env/7/value"),
            format!("{plugin}/csi.sock"),
        ),
        (
            format!("{container}/volumeMounts/2/mountPath"),
            kubelet.to_owned(),
        ),
        (format!("{spec}/volumes/0/hostPath/path"), plugin.clone()),
        (
            format!("{spec}/volumes/1/hostPath/path"),
            format!("{kubelet}/plugins_registry"),
        ),
        (
            format!("{spec}/volumes/2/hostPath/path"),
            kubelet.to_owned(),
        ),
    ];
    let mut patch = String::new();
    for (path, old) in &moved {
        patch += &replace(path, old, &old.replacen(kubelet, &root.to_string(), 1));
    }
    patch += &replace(
        &format!("{spec}/volumes/3/hostPath/path"),
        "/var/lib/ssi-csi",
        &state.to_string(),
    );
    // NB: not a tmpfs, so the driver keeps no tokens there (it says so); the demo holds no
    // leases, and the host's /run stays untouched.
    let run = node.kubelet_root.with_file_name("ssi-csi-run");
    patch += &replace(
        &format!("{spec}/volumes/4/hostPath/path"),
        "/run/ssi-csi",
        &run.display().to_string(),
    );
    format!(
        r#"# manifests/csi on the test bed's node.
resources:
  - {base}
configMapGenerator:
  - name: ssi-csi-config
    namespace: {SYSTEM_NAMESPACE}
    behavior: merge
    literals:
      - SSI_CSI_STORE_ADDRESS={store}
      - SSI_CSI_STORE_AUTH_PATH=main-kube
      # The demo's rotation interval; the default is 2m.
      - SSI_CSI_ROTATION_INTERVAL={DEMO_ROTATION}
# This kubelet runs with --root-dir={root} instead of /var/lib/kubelet: every host path and the
# mount the driver shares with kubelet must name that directory.
patches:
  - target:
      kind: DaemonSet
      name: ssi-csi
    patch: |-
{patch}"#,
        base = base.display(),
    )
}

/// `to` as a path relative to `from` (kustomize wants bases as relative paths).
fn relative_to(from: &Path, to: &Path) -> crate::Result<PathBuf> {
    let from = from.canonicalize()?;
    let to = to.canonicalize()?;
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut relative = PathBuf::new();
    for _ in from.components().skip(common) {
        relative.push("..");
    }
    for part in to.components().skip(common) {
        relative.push(part);
    }
    Ok(relative)
}

async fn guide_deployment(bed: &TestBed, narrator: &mut Narrator) -> crate::Result<()> {
    narrator.step(
        "Apply the guide's Deployment, as written; the webhook stores it with a read-only volume",
    );
    let deployment = workspace_path("tests/fixtures/guide/backend-deployment.yaml");
    kubectl(
        bed,
        narrator,
        &["apply", "-f", &deployment.display().to_string()],
    )?;
    let stored = kubectl(
        bed,
        narrator,
        &[
            "-n",
            NAMESPACE,
            "get",
            "deployment",
            "backend",
            "-o",
            "jsonpath=volumes:      {.spec.template.spec.volumes}{\"\\n\"}volumeMounts: {.spec.template.spec.containers[0].volumeMounts}{\"\\n\"}",
        ],
    )?;
    ensure!(
        stored.matches("\"readOnly\":true").count() == 2,
        "the stored Deployment is not read-only in both places: {stored}"
    );

    narrator.step("The backend pod starts with the secrets volume; its log shows the password");
    kubectl(
        bed,
        narrator,
        &[
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            "deployment/backend",
            "--timeout=120s",
        ],
    )?;
    let expected = format!("db-password: {PASSWORD}");
    let log = wait_for_log(bed, &expected, Duration::from_secs(60)).await?;
    narrator.command(&format!("kubectl -n {NAMESPACE} logs deployment/backend"));
    narrator.result(&log);
    Ok(())
}

async fn rotation(bed: &TestBed, narrator: &mut Narrator) -> crate::Result<()> {
    narrator.step(&format!(
        "Change the secret in Vault; the file changes in the running pod (rotation every {DEMO_ROTATION} here, 2m by default)"
    ));
    let put = [
        "kv",
        "put",
        "secret/database-for-python-app",
        &format!("password={ROTATED}"),
    ];
    narrator.command(&format!("vault {}", put.join(" ")));
    narrator.result(&run(bed.bao()?.args(put))?);
    let changed_at = Instant::now();
    let log = wait_for_log(
        bed,
        &format!("db-password: {ROTATED}"),
        Duration::from_secs(90),
    )
    .await?;
    narrator.command(&format!("kubectl -n {NAMESPACE} logs deployment/backend"));
    narrator.result(&log);
    ensure!(
        log.contains("IN_MOVED_TO ..data"),
        "the app's directory watch did not report the ..data swap"
    );
    narrator.result(&format!(
        "(in the log {:.1} s after the change; no restart: the pod's restart count is {})",
        changed_at.elapsed().as_secs_f64(),
        run(bed.kubectl().args([
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-l",
            "app=backend",
            "-o",
            "jsonpath={.items[0].status.containerStatuses[0].restartCount}",
        ]))?
    ));
    Ok(())
}

fn subpath_refused(bed: &TestBed, narrator: &mut Narrator) -> crate::Result<()> {
    narrator.step("Apply the guide's subPath variant: refused, because such a file never rotates");
    let subpath = workspace_path("tests/fixtures/guide/backend-subpath-deployment.yaml");
    narrator.command(&format!("kubectl apply -f {}", subpath.display()));
    let output = bed.kubectl().args(["apply", "-f"]).arg(&subpath).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    narrator.result(&stderr);
    ensure!(
        !output.status.success() && stderr.contains("never sees secret rotation"),
        "the subPath Deployment was not refused as expected"
    );
    Ok(())
}

async fn env_injection(bed: &TestBed, narrator: &mut Narrator) -> crate::Result<()> {
    narrator.step("Env injection: a pod annotated with the Vault role gets DB_PASSWORD from Vault");
    let pod = workspace_path("tests/fixtures/demo/env-injection-pod.yaml");
    narrator.command(&format!("cat {}", pod.display()));
    narrator.result(&std::fs::read_to_string(&pod)?);
    kubectl(bed, narrator, &["apply", "-f", &pod.display().to_string()])?;
    let stored = kubectl(
        bed,
        narrator,
        &[
            "-n",
            NAMESPACE,
            "get",
            "pod",
            "env-demo",
            "-o",
            "jsonpath=initContainers: {.spec.initContainers[*].name} {.spec.initContainers[*].image}{\"\\n\"}app command:    {.spec.containers[0].command} {.spec.containers[0].args}{\"\\n\"}",
        ],
    )?;
    ensure!(
        stored.contains("ssi-injector"),
        "the pod was not injected: {stored}"
    );
    wait::until(Duration::from_secs(90), "pod env-demo to succeed", || {
        let phase = run(bed.kubectl().args([
            "-n",
            NAMESPACE,
            "get",
            "pod",
            "env-demo",
            "-o",
            "jsonpath={.status.phase}",
        ]))
        .unwrap_or_default();
        wait::check(phase == "Succeeded", || format!("phase {phase:?}"))
    })
    .await?;
    let log = kubectl(bed, narrator, &["-n", NAMESPACE, "logs", "env-demo"])?;
    ensure!(
        log.contains(&format!("DB_PASSWORD={ROTATED}")),
        "the pod's log does not show the injected value: {log}"
    );
    Ok(())
}

fn uninstall(bed: &TestBed, narrator: &mut Narrator, overlays: &Overlays) -> crate::Result<()> {
    narrator.step(
        "Clean up: the workloads first (the driver unmounts their volumes), then our components",
    );
    kubectl(
        bed,
        narrator,
        &[
            "-n",
            NAMESPACE,
            "delete",
            "pod/env-demo",
            "deployment/backend",
            "--wait=true",
        ],
    )?;
    kubectl(
        bed,
        narrator,
        &[
            "-n",
            NAMESPACE,
            "wait",
            "--for=delete",
            "pod",
            "-l",
            "app=backend",
            "--timeout=90s",
        ],
    )?;
    for overlay in [&overlays.webhook, &overlays.csi] {
        kubectl(
            bed,
            narrator,
            &[
                "delete",
                "-k",
                &overlay.display().to_string(),
                "--ignore-not-found",
                "--wait=true",
            ],
        )?;
    }
    Ok(())
}

/// The backend pod's log once it contains `expected`.
async fn wait_for_log(bed: &TestBed, expected: &str, within: Duration) -> crate::Result<String> {
    wait::until(
        within,
        &format!("the backend pod's log to show {expected:?}"),
        || {
            let log = run(bed
                .kubectl()
                .args(["-n", NAMESPACE, "logs", "deployment/backend"]))
            .unwrap_or_default();
            if log.contains(expected) {
                Ok(log)
            } else {
                Err(log)
            }
        },
    )
    .await
}

/// What a person needs to see when a step failed: pods, recent events and our components' logs.
pub fn diagnose(bed: &TestBed) {
    let show = |args: &[&str]| {
        eprintln!("\n$ kubectl {}", args.join(" "));
        match bed.kubectl().args(args).output() {
            Ok(output) => eprint!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!("{e}"),
        }
    };
    show(&["get", "pods", "-A", "-o", "wide"]);
    show(&["get", "events", "-A", "--sort-by=.lastTimestamp"]);
    for component in ["daemonset/ssi-csi", "deployment/ssi-webhook"] {
        show(&["-n", SYSTEM_NAMESPACE, "logs", component, "--tail=30"]);
    }
}
