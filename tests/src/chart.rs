//! The Helm chart (charts/secrets-store-integration) rendered with the real helm, built from its
//! Go module by tests/bed/provision.sh: what the suites install or register comes from it.

use anyhow::{Context, bail};
use k8s_openapi::serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The namespace the chart's components go into in the tests, as docs/install.md uses.
pub const SYSTEM_NAMESPACE: &str = "secrets-store-integration";

/// Waits until the installed chart's webhook Deployment has all its replicas ready again (after
/// its pods were deleted or moved), at most 120 s.
pub fn webhook_rolled_out(bed: &crate::TestBed) -> crate::Result<String> {
    crate::run(bed.kubectl().args([
        "-n",
        SYSTEM_NAMESPACE,
        "rollout",
        "status",
        "deployment/ssi-webhook",
        "--timeout=120s",
    ]))
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    crate::workspace_path("charts/secrets-store-integration")
}

/// `images.repository` of images loaded into the nodes without a registry, as the bed's are.
pub const LOCAL_IMAGES: &str = "images.repository=secrets-store-integration";

/// The Kubernetes release the bed builds (`tests/bed/kube/go.mod`), e.g. `v1.37.2`.
pub fn pinned_kube_version() -> crate::Result<String> {
    let go_mod = std::fs::read_to_string(crate::workspace_path("tests/bed/kube/go.mod"))?;
    go_mod
        .lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("require k8s.io/kubernetes ")?;
            Some(rest.split_whitespace().next()?.to_owned())
        })
        .context("no `require k8s.io/kubernetes` in tests/bed/kube/go.mod")
}

/// helm, keeping its state below `home` (never the user's own).
pub fn helm(home: &Path) -> crate::Result<Command> {
    let mut command = Command::new(crate::tool_path("helm")?);
    command
        .env("HOME", home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    Ok(command)
}

/// `helm template` of the chart into [`SYSTEM_NAMESPACE`] with `values` (`--set` pairs);
/// helm's own error text when it refuses them.
pub fn render(home: &Path, values: &[&str]) -> crate::Result<String> {
    render_in(home, SYSTEM_NAMESPACE, values)
}

/// [`render`] for a release in `namespace`.
pub fn render_in(home: &Path, namespace: &str, values: &[&str]) -> crate::Result<String> {
    let mut command = helm(home)?;
    command.args(["template", "ssi"]).arg(chart_dir());
    command.args(["--namespace", namespace]);
    // As for the bed's cluster: `helm template` alone assumes Kubernetes 1.20.
    command.args(["--kube-version", &pinned_kube_version()?]);
    // The bed's images are loaded into its node under the names scripts/build-images gives them.
    if !values.iter().any(|v| v.starts_with("images.repository=")) {
        command.args(["--set", LOCAL_IMAGES]);
    }
    for value in values {
        command.args(["--set", value]);
    }
    let output = command.output()?;
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The objects of a multi-document YAML text.
pub fn objects(yaml: &str) -> crate::Result<Vec<serde_json::Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// The one object of `kind` in `objects`.
pub fn find<'a>(
    objects: &'a [serde_json::Value],
    kind: &str,
) -> crate::Result<&'a serde_json::Value> {
    let mut found = objects.iter().filter(|o| o["kind"] == kind);
    match (found.next(), found.next()) {
        (Some(object), None) => Ok(object),
        (None, _) => bail!("the chart renders no {kind}"),
        (Some(_), Some(_)) => bail!("the chart renders more than one {kind}"),
    }
}

/// Applies the CSIDriver object as the chart installs it (for beds that run the driver as a
/// process rather than through the chart).
pub fn apply_csidriver(bed: &crate::TestBed) -> crate::Result<()> {
    let rendered = render(
        &bed.dir().join("helm"),
        &["store.address=https://vault.example.com:8200"],
    )?;
    let objects = objects(&rendered)?;
    bed.apply_yaml(&find(&objects, "CSIDriver")?.to_string())?;
    Ok(())
}

/// `helm <command> ssi <chart>` into [`SYSTEM_NAMESPACE`], `--atomic` (ready, or taken out
/// again) within 240 s; the caller adds the values.
pub fn release_args(command: &str) -> Vec<String> {
    [
        command,
        "ssi",
        &chart_dir().display().to_string(),
        "--namespace",
        SYSTEM_NAMESPACE,
        "--atomic",
        "--timeout",
        "240s",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect()
}
