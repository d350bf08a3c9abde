//! What the driver's benchmarks share (`csi_bench`, `cluster_bench`): a store and a namespace
//! set up for many mounts of one SecretsStoreImport by one or many ServiceAccounts.

use crate::csi::CsiDriver;
use crate::{TestBed, run};
use anyhow::Context;

/// The namespace of the benchmarks' pods.
pub const NS: &str = "bench";
/// How the driver names itself to the apiserver.
pub const DRIVER_AGENT: &str = "ssi-csi/";
/// The store paths the benchmarks' SecretsStoreImport `bench` reads, one file each.
pub const PATHS: [&str; 3] = [
    "secret/data/bench/a",
    "secret/data/bench/b",
    "secret/data/bench/c",
];

/// KV values at [`PATHS`], the store's Kubernetes auth at `kubernetes` with role `bench` for
/// every ServiceAccount of [`NS`], the CRD, the namespace, the SecretsStoreImport `bench` and
/// ServiceAccounts `sa-0`..`sa-<identities - 1>`.
pub fn setup(bed: &TestBed, identities: usize) -> crate::Result<()> {
    let bao = |args: &[&str]| run(bed.bao()?.args(args));
    bao(&["secrets", "enable", "-path=secret", "-version=2", "kv"])?;
    for (i, path) in ["secret/bench/a", "secret/bench/b", "secret/bench/c"]
        .iter()
        .enumerate()
    {
        bao(&["kv", "put", path, &format!("value=v{i}")])?;
    }
    bao(&["auth", "enable", "kubernetes"])?;
    let kube = bed.kube();
    bao(&[
        "write",
        "auth/kubernetes/config",
        &format!("kubernetes_host={}", kube.url),
        &format!("kubernetes_ca_cert=@{}", kube.ca_cert.display()),
    ])?;
    let policy = bed.dir().join("bench.hcl");
    std::fs::write(
        &policy,
        "path \"secret/data/bench/*\" { capabilities = [\"read\"] }\n",
    )?;
    bao(&["policy", "write", "bench", policy.to_str().context("utf8")?])?;
    bao(&[
        "write",
        "auth/kubernetes/role/bench",
        "bound_service_account_names=*",
        &format!("bound_service_account_namespaces={NS}"),
        "policies=bench",
        "ttl=1h",
    ])?;

    let kubectl = |args: &[&str]| run(bed.kubectl().args(args));
    bed.install_crd()?;
    kubectl(&["create", "namespace", NS])?;
    kubectl(&[
        "create",
        "clusterrolebinding",
        "bench-auth-delegator",
        "--clusterrole=system:auth-delegator",
        &format!("--group=system:serviceaccounts:{NS}"),
    ])?;
    let ssi = format!(
        "apiVersion: deckhouse.io/v1alpha1\nkind: SecretsStoreImport\nmetadata:\n  name: bench\n  namespace: {NS}\nspec:\n  type: CSI\n  role: bench\n  files:\n{}",
        PATHS
            .iter()
            .enumerate()
            .map(|(i, p)| format!("  - name: f{i}\n    source: {{path: {p}, key: value}}\n"))
            .collect::<String>()
    );
    bed.apply_yaml(&ssi)?;
    let accounts: String = (0..identities).map(|i| format!("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa-{i}\n  namespace: {NS}\n---\n")).collect();
    bed.apply_yaml(&accounts)?;
    Ok(())
}

/// The driver's own count of successful store requests of `operation` (`login`, `read`).
pub async fn calls(driver: &CsiDriver, operation: &str) -> f64 {
    let series = format!("ssi_csi_store_requests_total{{operation=\"{operation}\",result=\"ok\"}}");
    driver.metric(&series).await.unwrap_or(0.0)
}

/// The benchmark's `n`-th command-line argument, or `default` when it is not given.
pub fn arg<T: std::str::FromStr>(n: usize, default: T) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(std::env::args()
        .nth(n)
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(default))
}
