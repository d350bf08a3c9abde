//! `ssi-tests`: the real test bed of DESIGN.md section 5 and the end-to-end suites built on it.
//!
//! Design choices:
//! - Real servers only: etcd, and kube-apiserver and kube-controller-manager of a current release
//!   built from their Go modules (`tests/bed/kube/go.mod`) and started with stock settings, and
//!   an OpenBao dev server, each a child process on free loopback ports.
//!   `tests/bed/provision.sh` installs them; a missing one is an error that names that script.
//! - One bed per test, in its own temporary directory with its own PKI and ports, so that test
//!   binaries and tests running in parallel never share state.
//! - Teardown cannot be forgotten: dropping the [`TestBed`] (also while a test panics) kills and
//!   reaps every child, and every child is started with `PR_SET_PDEATHSIG` so that it dies with
//!   the test even if the test process is killed outright. NB: that signal follows the *thread*
//!   that spawned the child, so create and drop a bed on the same thread (the test's own), which
//!   `#[tokio::test]` does.
//! - Set `SSI_TESTBED_KEEP=1` to keep the bed's directory (logs, PKI, kubeconfig) for a post-mortem.

pub mod audit;
mod bed;
pub mod bench;
pub mod chart;
pub mod cluster;
pub mod csi;
pub mod demo;
pub mod engines;
pub mod hostile_registry;
pub mod images;
pub mod load;
pub mod node;
mod pki;
pub mod postgres;
pub mod process;
pub mod registry;
pub mod wait;
pub mod walkthrough;
pub mod webhook;

pub use bed::{
    KUBE_API_AUDIENCE, Kube, OpenBao, SA_ISSUER, Store, TestBed, TestBedBuilder, VAULT_AUDIENCE,
    run,
};

/// Result type of the harness: any failure is a test failure with a readable chain.
pub type Result<T> = anyhow::Result<T>;

/// A provisioned test-bed tool (`bao`, `grpcurl`, ...), or an error naming the install command.
pub fn tool_path(name: &str) -> Result<std::path::PathBuf> {
    process::tool(name)
}

/// Path of a file in the workspace, for tests that read manifests or fixtures.
pub fn workspace_path(relative: &str) -> std::path::PathBuf {
    let tests_crate = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_crate.parent().unwrap_or(tests_crate).join(relative)
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:` ...), 0 when unreadable; for the
/// benchmarks' memory figures.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
