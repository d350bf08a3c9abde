//! Command line and environment configuration of the webhook.

use crate::mutate::SubpathPolicy;
use clap::Parser;
use ssi_core::duration::{parse_duration, parse_duration_or_zero};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Admission webhook for workloads that use SecretsStoreImports: makes secrets-store volumes
/// read-only, expands the import annotation, and refuses subPath mounts that would never rotate.
#[derive(Parser, Debug, Clone)]
#[command(name = "ssi-webhook", version, about)]
pub struct Args {
    /// HTTPS address the apiserver calls (POST /enforce, /inject and /mutate).
    #[arg(long, env = "SSI_WEBHOOK_LISTEN_ADDR", default_value = "0.0.0.0:8443")]
    pub listen_addr: SocketAddr,

    /// PEM serving certificate (chain), e.g. the tls.crt of a mounted TLS Secret.
    #[arg(
        long,
        env = "SSI_WEBHOOK_TLS_CERT",
        default_value = "/etc/ssi-webhook/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,

    /// PEM private key of the serving certificate.
    #[arg(
        long,
        env = "SSI_WEBHOOK_TLS_KEY",
        default_value = "/etc/ssi-webhook/tls/tls.key"
    )]
    pub tls_key: PathBuf,

    /// PEM file of the CA(s) whose client certificates the webhook requires: the apiserver's,
    /// configured to present one through its AdmissionConfiguration (docs/install.md). Unset: any
    /// client that reaches the port may send reviews.
    #[arg(long, env = "SSI_WEBHOOK_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,

    /// How often the certificate files are re-read; a changed, valid pair is served from the
    /// next handshake on.
    #[arg(long, env = "SSI_WEBHOOK_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    /// Plain-HTTP address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SSI_WEBHOOK_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// What a subPath or subPathExpr mount of a secrets-store volume gets: deny (the default;
    /// such a file never rotates) or warn.
    #[arg(long, env = "SSI_WEBHOOK_SUBPATH_POLICY", value_enum, default_value_t = SubpathPolicy::Deny)]
    pub subpath_policy: SubpathPolicy,

    /// Warn when a workload names a SecretsStoreImport that does not exist (needs RBAC to get
    /// secretsstoreimports; off means no Kubernetes API access at all).
    #[arg(long, env = "SSI_WEBHOOK_SSI_LOOKUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub ssi_lookup: bool,

    /// Bound on the SecretsStoreImport lookups of one review (they run at once, and within the
    /// review's own 9 s); past it the review goes on with a warning.
    #[arg(long, env = "SSI_WEBHOOK_SSI_LOOKUP_DEADLINE", default_value = "1s", value_parser = parse_duration)]
    pub ssi_lookup_deadline: Duration,

    /// Admission reviews handled at once; the rest wait up to 5 s for a turn, then get HTTP 429.
    #[arg(long, env = "SSI_WEBHOOK_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,

    /// How long a lookup's answer is reused.
    #[arg(long, env = "SSI_WEBHOOK_SSI_CACHE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub ssi_cache_ttl: Duration,

    /// Inject the env injector into Pods annotated with secrets-store.deckhouse.io/role.
    #[arg(long, env = "SSI_WEBHOOK_ENV_INJECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub env_injection: bool,

    /// Image of the injector's init container (holds /ssi-injector).
    #[arg(
        long,
        env = "SSI_WEBHOOK_INJECTOR_IMAGE",
        default_value = concat!("secrets-store-integration/ssi-injector:", env!("CARGO_PKG_VERSION"))
    )]
    pub injector_image: String,

    /// Store address for Pods without the secrets-store.deckhouse.io/addr annotation.
    #[arg(long, env = "SSI_WEBHOOK_INJECTOR_DEFAULT_ADDRESS")]
    pub injector_default_address: Option<String>,

    /// Auth method for Pods without the secrets-store.deckhouse.io/auth-method annotation:
    /// kubernetes or jwt.
    #[arg(
        long,
        env = "SSI_WEBHOOK_INJECTOR_DEFAULT_AUTH_METHOD",
        default_value = "kubernetes"
    )]
    pub injector_default_auth_method: ssi_core::AuthMethod,

    /// Mount path of that method for Pods without the secrets-store.deckhouse.io/auth-path
    /// annotation (default: the method's name, kubernetes or jwt).
    #[arg(long, env = "SSI_WEBHOOK_INJECTOR_DEFAULT_AUTH_PATH")]
    pub injector_default_auth_path: Option<String>,

    /// Store namespace for Pods without the secrets-store.deckhouse.io/namespace annotation.
    #[arg(long, env = "SSI_WEBHOOK_INJECTOR_DEFAULT_NAMESPACE")]
    pub injector_default_namespace: Option<String>,

    /// PEM bundle of the store's CA, passed to injected Pods that name neither a tls-secret nor
    /// cacert_bytes: no Secret with the CA is needed in every namespace.
    #[arg(long, env = "SSI_WEBHOOK_INJECTOR_CA_FILE")]
    pub injector_ca_file: Option<PathBuf>,

    /// Audience of the projected ServiceAccount token the injector logs in with. Empty (the
    /// default): the Kubernetes API's own audience, which a store role without `audience`
    /// accepts on any cluster.
    #[arg(long, env = "SSI_WEBHOOK_INJECTOR_TOKEN_AUDIENCE", default_value = "")]
    pub injector_token_audience: String,

    /// Look up the image's ENTRYPOINT/CMD for injected containers without a command (needs RBAC
    /// to get secrets and serviceaccounts, for the pod's pull credentials). Off: such Pods are
    /// denied with a message asking for an explicit command.
    #[arg(long, env = "SSI_WEBHOOK_REGISTRY_LOOKUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub registry_lookup: bool,

    /// Bound on one Pod's registry lookups (credentials included); keep it below the webhook's
    /// timeoutSeconds (10 s in the chart, `webhook.timeoutSeconds`).
    #[arg(long, env = "SSI_WEBHOOK_REGISTRY_DEADLINE", default_value = "5s", value_parser = parse_duration)]
    pub registry_deadline: Duration,

    /// How long an image's ENTRYPOINT/CMD is reused, per image and credentials.
    #[arg(long, env = "SSI_WEBHOOK_REGISTRY_CACHE_TTL", default_value = "10m", value_parser = parse_duration)]
    pub registry_cache_ttl: Duration,

    /// PEM file of CA certificates trusted for registries besides the system's.
    #[arg(long, env = "SSI_WEBHOOK_REGISTRY_CA_FILE")]
    pub registry_ca_file: Option<PathBuf>,

    /// Architecture picked from a multi-arch image index (the OS is linux).
    #[arg(
        long,
        env = "SSI_WEBHOOK_REGISTRY_ARCHITECTURE",
        default_value = "amd64"
    )]
    pub registry_architecture: String,

    /// Registries (host:port, comma-separated) reached over plain HTTP; local registries only.
    #[arg(long, env = "SSI_WEBHOOK_REGISTRY_PLAIN_HTTP", value_delimiter = ',')]
    pub registry_plain_http: Vec<String>,

    /// When set, the only registries (host or host:port, comma-separated) the ENTRYPOINT lookup
    /// asks; these skip the address check. Empty: any registry whose name resolves to a public
    /// address (and to a private one with --registry-allow-private).
    #[arg(
        long,
        env = "SSI_WEBHOOK_REGISTRY_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub registry_allowed_hosts: Vec<String>,

    /// Let the ENTRYPOINT lookup reach registries on private addresses (an in-cluster registry).
    /// Loopback and link-local addresses stay refused unless named in --registry-allowed-hosts.
    #[arg(long, env = "SSI_WEBHOOK_REGISTRY_ALLOW_PRIVATE")]
    pub registry_allow_private: bool,

    /// After SIGTERM: how long to keep serving while /readyz already fails, so that endpoints
    /// drop this replica before it stops accepting connections.
    #[arg(long, env = "SSI_WEBHOOK_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration_or_zero)]
    pub shutdown_delay: Duration,

    /// Log lines as plain text for people or as JSON for log pipelines.
    #[arg(long, env = "SSI_WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

pub use ssi_runtime::logging::LogFormat;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design_and_every_flag_has_an_env_var() {
        let args = Args::try_parse_from(["ssi-webhook"]).expect("parses");
        assert_eq!(args.subpath_policy, SubpathPolicy::Deny);
        assert!(args.ssi_lookup);
        assert_eq!(args.listen_addr.port(), 8443);
        // One scheme for every component: SSI_<COMPONENT>_<FLAG>.
        assert_eq!(
            ssi_runtime::flags::check_env_scheme::<Args>("SSI_WEBHOOK_"),
            Ok(())
        );
    }

    #[test]
    fn bad_values_are_refused_with_what_to_write() {
        let error = Args::try_parse_from(["ssi-webhook", "--subpath-policy", "allow"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("deny") && error.contains("warn"), "{error}");
        let error = Args::try_parse_from(["ssi-webhook", "--tls-reload-interval", "0s"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("longer than zero"), "{error}");
        let args = Args::try_parse_from(["ssi-webhook", "--ssi-lookup", "false"]).unwrap();
        assert!(!args.ssi_lookup);
    }
}
