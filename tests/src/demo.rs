//! The main job after the guide's set-up: our components installed with Helm from
//! `charts/secrets-store-integration` on the real node, as a user installs them, and the guide's
//! workloads running on it, through an upgrade.
//!
//! The only values set are those a user of such a cluster would set too (printed as the demo
//! runs): the store's address and auth path, the demo's rotation interval, and the node's
//! directories, as its kubelet's root is not /var/lib/kubelet on the test bed.

use crate::images::{ImageFile, build_image, busybox_image};
use crate::node::{NODE_NAME, Node, port_of};
use crate::walkthrough::{NAMESPACE, Narrator, PASSWORD, kubectl};
use crate::{TestBed, run, wait, workspace_path};
use anyhow::ensure;
use std::process::Command;
use std::time::{Duration, Instant};

/// The value the demo writes to Vault to show rotation.
pub const ROTATED: &str = "rotated-db-password";
/// The value written after the upgrade, to show that rotation goes on through it.
pub const UPGRADED: &str = "after-upgrade-db-password";
/// The demo rotates every few seconds instead of the product's 2 minutes, so nobody waits.
const DEMO_ROTATION: &str = "5s";
use crate::chart::SYSTEM_NAMESPACE;
/// The shipped images, as `scripts/build-images` leaves them.
pub const SHIPPED_IMAGES: [&str; 3] = ["ssi-csi", "ssi-webhook", "ssi-injector"];
/// The guide's Deployment runs image some/app:0.0.1; the demo's is the watch-secrets example.
const GUIDE_APP_IMAGE: &str = "some/app:0.0.1";

/// Runs the demo on `node`: installs the shipped images and the chart, shows the guide's
/// Deployment, a rotation, an upgrade during which the volume keeps rotating, the subPath
/// refusal and env injection, then uninstalls.
pub async fn on_the_node(bed: &TestBed, node: &Node, narrator: &mut Narrator) -> crate::Result<()> {
    load_images(bed, node, narrator)?;
    install(bed, node, narrator).await?;
    guide_deployment(bed, narrator).await?;
    rotation(bed, narrator).await?;
    subpath_refused(bed, narrator)?;
    env_injection(bed, narrator).await?;
    upgrade(bed, node, narrator).await?;
    uninstall(bed, narrator)?;
    Ok(())
}

fn load_images(bed: &TestBed, node: &Node, narrator: &mut Narrator) -> crate::Result<()> {
    narrator.step("Load the images into the node's containerd (a registry pull would do the same)");
    for name in SHIPPED_IMAGES {
        node.load_image(&crate::images::shipped_image(name)?)?;
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

/// helm, with its state below the bed's directory (never the user's HOME).
pub(crate) fn helm(bed: &TestBed) -> crate::Result<Command> {
    let mut command = crate::chart::helm(&bed.dir().join("helm"))?;
    command.env("KUBECONFIG", &bed.kube().kubeconfig);
    Ok(command)
}

/// Runs helm with `args`, printing the command as a user would type it and its output.
fn helm_step(bed: &TestBed, narrator: &Narrator, args: &[String]) -> crate::Result<String> {
    narrator.command(&format!("helm {}", args.join(" ")));
    let output = run(helm(bed)?.args(args))?;
    narrator.result(output.trim_end());
    Ok(output)
}

/// The chart's values for this bed, as a user of such a cluster would set them: the store's
/// address and auth path, the demo's rotation interval, and the node's directories (this
/// kubelet runs with --root-dir below the bed, not /var/lib/kubelet).
fn bed_values(bed: &TestBed, node: &Node) -> crate::Result<Vec<String>> {
    // Pods reach the bed's OpenBao through the node's pod gateway.
    let store = format!(
        "http://{}:{}",
        node.pod_gateway,
        port_of(&bed.openbao().addr)?
    );
    let root = &node.kubelet_root;
    let values = [
        // The images loaded into the node above, under the names scripts/build-images gives them.
        crate::chart::LOCAL_IMAGES.to_owned(),
        format!("store.address={store}"),
        "store.authPath=main-kube".to_owned(),
        format!("csi.rotationInterval={DEMO_ROTATION}"),
        format!("csi.kubeletRoot={}", root.display()),
        format!(
            "csi.stateDir={}",
            root.with_file_name("ssi-csi-state").display()
        ),
        // NB: not a tmpfs, so the driver keeps no tokens there (it says so); the demo holds no
        // leases, and the host's /run stays untouched.
        format!(
            "csi.tokenDir={}",
            root.with_file_name("ssi-csi-run").display()
        ),
    ];
    Ok(values
        .iter()
        .flat_map(|value| ["--set".to_owned(), value.clone()])
        .collect())
}

/// `helm <command> ssi <chart>` for this bed's release: `--atomic` (ready, or taken out again)
/// and the bed's values.
fn release_args(command: &str, bed: &TestBed, node: &Node) -> crate::Result<Vec<String>> {
    let mut args = crate::chart::release_args(command);
    args.extend(bed_values(bed, node)?);
    Ok(args)
}

async fn install(bed: &TestBed, node: &Node, narrator: &mut Narrator) -> crate::Result<()> {
    narrator
        .step("Create the namespace, labelled for the privileged driver (Pod Security Admission)");
    kubectl(bed, narrator, &["create", "namespace", SYSTEM_NAMESPACE])?;
    kubectl(
        bed,
        narrator,
        &[
            "label",
            "namespace",
            SYSTEM_NAMESPACE,
            "pod-security.kubernetes.io/enforce=privileged",
        ],
    )?;

    narrator.step(
        "Install the driver and the webhook with Helm; --atomic returns once both are ready, or takes them out again",
    );
    helm_step(bed, narrator, &release_args("install", bed, node)?)?;

    narrator.step("Wait for kubelet to register the driver");
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
    Ok(())
}

/// `helm upgrade` with a changed driver setting, which replaces the driver's pod while the
/// backend's volume stays mounted; then a change in Vault must still reach the running pod.
async fn upgrade(bed: &TestBed, node: &Node, narrator: &mut Narrator) -> crate::Result<()> {
    narrator.step(
        "Upgrade with Helm (the driver's pod is replaced); the mounted volume keeps rotating",
    );
    let mut args = release_args("upgrade", bed, node)?;
    args.extend(["--set".to_owned(), "csi.rotationConcurrency=8".to_owned()]);
    helm_step(bed, narrator, &args)?;
    kubectl(
        bed,
        narrator,
        &[
            "-n",
            SYSTEM_NAMESPACE,
            "rollout",
            "status",
            "daemonset/ssi-csi",
            "--timeout=180s",
        ],
    )?;
    let put = [
        "kv",
        "put",
        "secret/database-for-python-app",
        &format!("password={UPGRADED}"),
    ];
    narrator.command(&format!("vault {}", put.join(" ")));
    narrator.result(&run(bed.bao()?.args(put))?);
    let log = wait_for_log(
        bed,
        &format!("db-password: {UPGRADED}"),
        Duration::from_secs(90),
    )
    .await?;
    narrator.command(&format!("kubectl -n {NAMESPACE} logs deployment/backend"));
    narrator.result(&log);
    Ok(())
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

fn uninstall(bed: &TestBed, narrator: &mut Narrator) -> crate::Result<()> {
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
    helm_step(
        bed,
        narrator,
        &[
            "uninstall".to_owned(),
            "ssi".to_owned(),
            "--namespace".to_owned(),
            SYSTEM_NAMESPACE.to_owned(),
            "--wait".to_owned(),
        ],
    )?;
    kubectl(
        bed,
        narrator,
        &["delete", "namespace", SYSTEM_NAMESPACE, "--wait=true"],
    )?;
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
