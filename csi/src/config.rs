//! Command line and environment configuration of the node driver.

use clap::{Args as ClapArgs, Parser};
use ssi_core::duration::parse_duration;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// CSI node driver secrets-store.csi.deckhouse.io: mounts the keys a SecretsStoreImport names as
/// files on a tmpfs, logging in to the store as the pod's ServiceAccount, and keeps them current.
#[derive(Parser, Debug, Clone)]
#[command(name = "ssi-csi", version, about)]
pub struct Args {
    /// Unix socket the CSI API is served on (kubelet connects to it).
    #[arg(long, env = "SSI_CSI_SOCKET", default_value = "/csi/csi.sock")]
    pub socket: PathBuf,

    /// Also serve kubelet's plugin registration API on this socket, so that kubelet's plugin
    /// watcher registers the driver without the node-driver-registrar sidecar. Put it in
    /// kubelet's watch directory: <kubelet-root>/plugins_registry/secrets-store.csi.deckhouse.io-reg.sock.
    #[arg(long, env = "SSI_CSI_REGISTRATION_SOCKET")]
    pub registration_socket: Option<PathBuf>,

    /// Path of the CSI socket as kubelet sees it, announced at registration; defaults to
    /// --socket (set it when the driver's container mounts the host directory elsewhere).
    #[arg(long, env = "SSI_CSI_KUBELET_CSI_SOCKET")]
    pub kubelet_csi_socket: Option<PathBuf>,

    /// After SIGTERM: how long calls in flight (and clients that keep connections open) get
    /// before the driver stops anyway; keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "SSI_CSI_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// This node's name, reported by NodeGetInfo.
    #[arg(long, env = "SSI_CSI_NODE_ID")]
    pub node_id: String,

    /// Kubelet's root directory; every target path must lie below it.
    #[arg(long, env = "SSI_CSI_KUBELET_ROOT", default_value = "/var/lib/kubelet")]
    pub kubelet_root: PathBuf,

    /// Node-local directory where mount records survive a driver restart.
    #[arg(long, env = "SSI_CSI_STATE_DIR", default_value = "/var/lib/ssi-csi")]
    pub state_dir: PathBuf,

    /// Directory on a tmpfs (the node's `/run`) where the Vault tokens holding leases are kept
    /// across a driver restart; not written to unless it is a tmpfs.
    #[arg(long, env = "SSI_CSI_TOKEN_DIR", default_value = "/run/ssi-csi/tokens")]
    pub token_dir: PathBuf,

    /// Store connection defaults and what a SecretsStoreImport may override.
    #[command(flatten)]
    pub store: StoreDefaults,

    /// Audience of the pod token kubelet passes (must be listed in the CSIDriver's tokenRequests).
    /// Empty (the default): the Kubernetes API's own audience, which a store role without
    /// `audience` accepts on any cluster.
    #[arg(long, env = "SSI_CSI_TOKEN_AUDIENCE", default_value = "")]
    pub token_audience: String,

    /// How often every mounted volume is re-read from the store (jittered by +-10%).
    #[arg(long, env = "SSI_CSI_ROTATION_INTERVAL", default_value = "2m", value_parser = parse_duration)]
    pub rotation_interval: Duration,

    /// Volumes rotated at the same time, at most.
    #[arg(long, env = "SSI_CSI_ROTATION_CONCURRENCY", default_value_t = 16)]
    pub rotation_concurrency: usize,

    /// Size limit of each volume's tmpfs, in bytes or with a k, m or g suffix (e.g. 4m), at most
    /// 1g. A volume's secrets and files may take twice as much of the driver's memory while it is
    /// fetched.
    #[arg(long, env = "SSI_CSI_TMPFS_SIZE", default_value = "4m", value_parser = parse_size)]
    pub tmpfs_size: String,

    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SSI_CSI_ADMIN_ADDR", default_value = "127.0.0.1:9809")]
    pub admin_addr: SocketAddr,

    /// Log line format: plain text or JSON.
    #[arg(long, env = "SSI_CSI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// What the driver uses when a SecretsStoreImport leaves a connection field out, and what it
/// lets a SecretsStoreImport choose at all.
#[derive(ClapArgs, Debug, Clone)]
pub struct StoreDefaults {
    /// Default store address, e.g. https://vault.example.com:8200.
    #[arg(long = "store-address", env = "SSI_CSI_STORE_ADDRESS")]
    pub address: Option<Url>,

    /// Auth method of SecretsStoreImports without spec.authMethod: kubernetes (the store
    /// reviews the pod's token with the API server) or jwt (the store checks it against the
    /// cluster's public keys).
    #[arg(
        long = "store-auth-method",
        env = "SSI_CSI_STORE_AUTH_METHOD",
        default_value = "kubernetes"
    )]
    pub auth_method: ssi_core::AuthMethod,

    /// Mount path of that method for SecretsStoreImports without spec.authPath (default: the
    /// method's name, kubernetes or jwt).
    #[arg(long = "store-auth-path", env = "SSI_CSI_STORE_AUTH_PATH")]
    pub auth_path: Option<String>,

    /// Default Vault namespace.
    #[arg(long = "store-namespace", env = "SSI_CSI_STORE_NAMESPACE")]
    pub namespace: Option<String>,

    /// File with the PEM bundle of the CAs trusted for the store (default: the system's).
    #[arg(long = "store-ca-cert", env = "SSI_CSI_STORE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// Store addresses a SecretsStoreImport may name in spec.address, comma separated. The
    /// default address is always allowed; nothing else is unless listed.
    /// An empty value allows none.
    // NB: the qualified path keeps clap from treating the field as repeated values: the parser
    // takes the whole list, so an empty variable means no addresses instead of one empty URL.
    #[arg(
        long = "allowed-store-addresses",
        env = "SSI_CSI_ALLOWED_STORE_ADDRESSES",
        value_parser = parse_address_list,
        default_value = ""
    )]
    pub allowed_addresses: ::std::vec::Vec<Url>,

    /// Let a SecretsStoreImport set skipTLSVerify: true.
    #[arg(long = "allow-skip-tls-verify", env = "SSI_CSI_ALLOW_SKIP_TLS_VERIFY")]
    pub allow_skip_tls_verify: bool,

    /// Bound on each request to the store.
    #[arg(long = "store-timeout", env = "SSI_CSI_STORE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Largest store reply read, in bytes (a secret larger than this is refused with an error
    /// naming its path).
    #[arg(long = "store-max-response-bytes", env = "SSI_CSI_STORE_MAX_RESPONSE_BYTES",
          default_value_t = ssi_vault::DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,
}

pub use ssi_runtime::logging::LogFormat;

/// A comma-separated list of store URLs; empty items (and an empty list) are skipped.
fn parse_address_list(text: &str) -> Result<Vec<Url>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(|address| {
            Url::parse(address).map_err(|e| format!("{address:?} is not a store URL ({e})"))
        })
        .collect()
}

/// A tmpfs `size=` value: digits with an optional k, m or g suffix.
fn parse_size(text: &str) -> Result<String, String> {
    let digits = text.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G']);
    if digits.is_empty()
        || !digits.chars().all(|c| c.is_ascii_digit())
        || text.len() - digits.len() > 1
    {
        return Err(format!("{text:?} is not a size like 4m, 512k or 1048576"));
    }
    if size_in_bytes(text) == Some(0) {
        return Err(format!(
            "{text:?} is no size: the kernel takes a tmpfs of size 0 as one without a limit"
        ));
    }
    if size_in_bytes(text).is_none_or(|bytes| bytes > MAX_TMPFS_BYTES) {
        return Err(format!(
            "{text:?} is more than the 1g a volume's tmpfs may be"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// The largest tmpfs a volume may have: what a volume holds is also held in the driver's memory
/// while it is written.
const MAX_TMPFS_BYTES: usize = 1 << 30;

/// The bytes of a size [`parse_size`] accepted (`4m`: 4 MiB), `None` if it overflows.
pub fn size_in_bytes(text: &str) -> Option<usize> {
    let digits = text.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G']);
    let unit = match text[digits.len()..].to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        _ => 1 << 30,
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("4m", true)]
    #[case("512K", true)]
    #[case("1048576", true)]
    #[case("4mb", false)]
    #[case("", false)]
    #[case("size=4m,exec", false)]
    #[case("2g", false)]
    #[case("0", false)]
    #[case("00k", false)]
    #[case("99999999999999999999k", false)]
    fn parses_tmpfs_sizes(#[case] text: &str, #[case] valid: bool) {
        assert_eq!(parse_size(text).is_ok(), valid);
    }

    #[rstest]
    #[case("4m", 4 << 20)]
    #[case("512K", 512 << 10)]
    #[case("1048576", 1 << 20)]
    #[case("1g", 1 << 30)]
    fn sizes_are_counted_in_bytes(#[case] text: &str, #[case] bytes: usize) {
        assert_eq!(size_in_bytes(text), Some(bytes));
    }

    #[rstest]
    #[case("", 0)]
    #[case("https://vault-2.example.com:8200", 1)]
    #[case("https://a.example.com, https://b.example.com:8200,", 2)]
    fn allowed_addresses_parse_as_a_list_and_empty_means_none(
        #[case] value: &str,
        #[case] count: usize,
    ) {
        let args = Args::try_parse_from([
            "ssi-csi",
            "--node-id",
            "n1",
            "--allowed-store-addresses",
            value,
        ])
        .expect("parses");
        assert_eq!(args.store.allowed_addresses.len(), count);
    }

    #[test]
    fn an_allowed_address_that_is_not_a_url_is_refused_by_name() {
        let error = Args::try_parse_from([
            "ssi-csi",
            "--node-id",
            "n1",
            "--allowed-store-addresses",
            "https://a.example.com,vault-b",
        ])
        .expect_err("refused")
        .to_string();
        assert!(error.contains("\"vault-b\" is not a store URL"), "{error}");
    }

    #[test]
    fn every_flag_has_an_env_var_and_defaults_match_the_design() {
        let args = Args::try_parse_from(["ssi-csi", "--node-id", "n1"]).expect("parses");
        assert_eq!(args.rotation_interval, Duration::from_secs(120));
        assert_eq!(args.token_audience, "");
        assert_eq!(args.store.auth_method, ssi_core::AuthMethod::Kubernetes);
        assert_eq!(args.store.auth_path, None);
        assert!(!args.store.allow_skip_tls_verify);
        // One scheme for every component: SSI_<COMPONENT>_<FLAG>.
        assert_eq!(
            ssi_runtime::flags::check_env_scheme::<Args>("SSI_CSI_"),
            Ok(())
        );
    }
}
