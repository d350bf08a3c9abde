//! The main job after the guide's set-up: our components doing their work on the test bed.
//! The webhook rewrites the guide's Deployment and refuses its subPath variant; the CSI driver
//! mounts the guide's SecretsStoreImport for a pod (this harness plays kubelet over the CSI
//! socket until the real node exists) and rotates it after `bao kv put`; an env-injected pod is
//! stored mutated and its container is run as the runtime would, printing the injected value.

use crate::csi::{CsiDriver, DriverOptions, create_pod, publish, unpublish};
use crate::walkthrough::{NAMESPACE, Narrator, PASSWORD, ROLE, SERVICE_ACCOUNT, kubectl};
use crate::webhook::Webhook;
use crate::{TestBed, run, workspace_path};
use anyhow::{Context, bail, ensure};
use std::process::Command;
use std::time::{Duration, Instant};

/// The value the demo writes to Vault to show rotation.
const ROTATED: &str = "rotated-db-password";
/// The demo rotates every few seconds instead of the product's 2 minutes, so nobody waits.
const DEMO_ROTATION: &str = "5s";

pub async fn mount_rotate_inject(bed: &TestBed, narrator: &mut Narrator) -> crate::Result<()> {
    narrator.step("Start the admission webhook (ssi-webhook) and register it with the apiserver");
    let webhook = Webhook::start(bed, &[]).await?;
    webhook.register(bed).await?;
    narrator.result(&format!(
        "serving {} with a CA from certs/generate.sh; MutatingWebhookConfiguration from manifests/webhook",
        webhook.url
    ));

    narrator.step("Apply the guide's Deployment: the webhook makes the secrets volume read-only");
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
            "get",
            "deployment",
            "backend",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.template.spec.volumes[0].csi}{\"\\n\"}{.spec.template.spec.containers[0].volumeMounts[0]}",
        ],
    )?;
    ensure!(
        stored.contains("\"readOnly\":true"),
        "the stored Deployment is not read-only: {stored}"
    );

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

    narrator.step(&format!(
        "Start the CSI node driver (ssi-csi; rotation every {DEMO_ROTATION} for the demo, 2m by default)"
    ));
    let driver = CsiDriver::start(
        bed,
        DriverOptions {
            rotation_interval: DEMO_ROTATION.into(),
            ..DriverOptions::default()
        },
    )
    .await?;
    narrator.result(&format!("CSI socket {}", driver.socket.display()));

    narrator.step("A backend pod mounts python-backend (NodePublishVolume with the pod's token, as kubelet sends it)");
    let volume = create_pod(
        bed,
        &driver,
        NAMESPACE,
        "backend-demo",
        SERVICE_ACCOUNT,
        "python-backend",
    )
    .await?;
    publish(bed, &driver, &volume)
        .await
        .map_err(|status| anyhow::anyhow!("NodePublishVolume failed: {}", status.message()))?;
    let file = volume.target.join("db-password");
    narrator.command(&format!("cat {}", file.display()));
    let mounted = std::fs::read_to_string(&file)?;
    narrator.result(&mounted);
    ensure!(
        mounted == PASSWORD,
        "the mounted file does not hold the guide's password"
    );

    narrator
        .step("Change the secret in Vault; the file changes in place (atomic swap), no restart");
    let put = [
        "kv",
        "put",
        "secret/database-for-python-app",
        &format!("password={ROTATED}"),
    ];
    narrator.command(&format!("bao {}", put.join(" ")));
    narrator.result(&run(bed.bao()?.args(put))?);
    let changed_at = Instant::now();
    loop {
        if std::fs::read_to_string(&file).is_ok_and(|text| text == ROTATED) {
            break;
        }
        if changed_at.elapsed() > Duration::from_secs(30) {
            bail!(
                "the mounted file did not change within 30 s:\n{}",
                driver.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    narrator.command(&format!("cat {}", file.display()));
    narrator.result(&format!(
        "{ROTATED}\n(seen {:.1} s after the change)",
        changed_at.elapsed().as_secs_f64()
    ));

    narrator.step("Env injection: a pod annotated with the Vault role is stored with the injector");
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "env-demo", "namespace": NAMESPACE, "annotations": {
            "secrets-store.deckhouse.io/role": ROLE,
            "secrets-store.deckhouse.io/addr": bed.openbao().addr,
            "secrets-store.deckhouse.io/auth-path": "main-kube"}},
        "spec": {"serviceAccountName": SERVICE_ACCOUNT, "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "busybox", "command": ["sh", "-c"],
                "args": ["echo \"DB_PASSWORD=$DB_PASSWORD\""],
                "env": [{"name": "DB_PASSWORD",
                         "value": "secrets-store:secret/data/database-for-python-app#password"}]}]}});
    let path = bed.dir().join("env-demo.json");
    std::fs::write(&path, pod.to_string())?;
    kubectl(bed, narrator, &["apply", "-f", &path.display().to_string()])?;
    let stored = kubectl(
        bed,
        narrator,
        &[
            "get",
            "pod",
            "env-demo",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath=init: {.spec.initContainers[0].command}{\"\\n\"}app:  {.spec.containers[0].command} {.spec.containers[0].args}",
        ],
    )?;
    ensure!(
        stored.contains("ssi-injector"),
        "the pod was not injected: {stored}"
    );

    narrator.step(
        "Run the pod's container as the runtime would: the injector resolves, then execs the app",
    );
    let container = stored_container(bed)?;
    let token = bed.dir().join("env-demo-token");
    std::fs::write(&token, pod_token_for_env_demo(bed).await?)?;
    let mut app = Command::new(crate::csi::workspace_binary("ssi-injector")?);
    app.env_clear().env("PATH", "/usr/bin:/bin");
    for var in container["env"].as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (var["name"].as_str(), var["value"].as_str()) {
            app.env(name, value);
        }
    }
    // Where the projected token volume would be mounted.
    app.env("SSI_INJECTOR_TOKEN_PATH", &token);
    app.args(
        container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str()),
    );
    narrator.command(
        "ssi-injector sh -c 'echo \"DB_PASSWORD=$DB_PASSWORD\"'   # with the pod's env and token",
    );
    let printed = run(&mut app)?;
    narrator.result(&printed);
    ensure!(
        printed.trim() == format!("DB_PASSWORD={ROTATED}"),
        "the app did not print the injected value"
    );

    narrator.step("Delete the backend pod's volume: unmounted and removed");
    unpublish(&driver, &volume)
        .await
        .map_err(|status| anyhow::anyhow!("NodeUnpublishVolume failed: {}", status.message()))?;
    ensure!(!volume.target.exists(), "the target is still there");
    narrator.result(&format!("{} is gone", volume.target.display()));
    Ok(())
}

/// The stored env-demo pod's app container, as the apiserver keeps it.
fn stored_container(bed: &TestBed) -> crate::Result<serde_json::Value> {
    let json = run(bed
        .kubectl()
        .args(["get", "pod", "env-demo", "-n", NAMESPACE, "-o", "json"]))?;
    let pod: serde_json::Value = serde_json::from_str(&json)?;
    Ok(pod["spec"]["containers"][0].clone())
}

/// backend-sa's token for audience `vault`, what the projected volume would hold.
async fn pod_token_for_env_demo(bed: &TestBed) -> crate::Result<String> {
    bed.service_account_token(NAMESPACE, SERVICE_ACCOUNT, crate::VAULT_AUDIENCE)
        .await
        .context("TokenRequest for backend-sa")
}
