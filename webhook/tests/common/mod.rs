//! Helpers shared by the webhook's integration tests: certificates from the users' generator, and
//! a Secret volume updated the way kubelet updates it.

use std::path::{Path, PathBuf};

/// A pair made by `certs/generate.sh` in `out` (re-running keeps the CA): (ca, cert, key).
pub fn generate(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/generate.sh");
    let output = std::process::Command::new(script)
        .args(["--ip", "127.0.0.1", "--out"])
        .arg(out)
        .output()
        .expect("certs/generate.sh runs (tests/bed/provision.sh installs openssl)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (out.join("ca.crt"), out.join("tls.crt"), out.join("tls.key"))
}

/// Kubelet's update of a Secret volume: a new hidden directory, then an atomic swap of the
/// `..data` symlink; `tls.crt` and `tls.key` are symlinks through `..data` and never written.
pub fn swap_in(volume: &Path, generation: &str, cert: &Path, key: &Path) {
    let dir = volume.join(generation);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(cert, dir.join("tls.crt")).unwrap();
    std::fs::copy(key, dir.join("tls.key")).unwrap();
    let tmp = volume.join("..data_tmp");
    std::os::unix::fs::symlink(generation, &tmp).unwrap();
    std::fs::rename(&tmp, volume.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(volume.join(file)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), volume.join(file)).unwrap();
        }
    }
}

/// A client trusting only `ca`; `fresh_connections` makes every request a new TLS handshake.
pub fn client_trusting(ca: &Path, fresh_connections: bool) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .tls_info(true);
    if fresh_connections {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().unwrap()
}
