//! The injection a pod asks for: its annotations read once, every value checked, before the
//! rewrite (`super`) touches anything.

use super::{InjectorSettings, TLS_DIR, TOKEN_DIR};
use crate::annotations::{self, PREFIX};
use crate::refusal::Refusal;
use serde_json::{Value, json};
use ssi_core::duration::parse_duration;
use ssi_core::injector::{self as contract, FileReaction, LOG_LEVELS, RestartMode};
use ssi_core::names::shown;

/// The Deckhouse webhook's opt-out: a pod labelled `stronghold.deckhouse.io/mutate: skip` is
/// not injected.
pub const DECKHOUSE_OPT_OUT_LABEL: &str = "stronghold.deckhouse.io/mutate";
/// Our own per-object opt-out of injection (`disabled`); the shipped configuration's selector
/// applies it too, this covers configurations without one.
pub const OPT_OUT_LABEL: &str = "secrets-store.deckhouse.io/webhook";

/// Largest CA bundle passed to the injector: it travels in an environment variable, which the
/// kernel caps at 128 KiB, and a store's CA chain is a few KiB.
pub const MAX_CA_PEM_BYTES: usize = 64 * 1024;

/// Bytes of any other annotation of ours on a pod: longer than any address, path or name, and
/// each is copied into every injected container.
pub const MAX_SETTING_BYTES: usize = 2048;
/// Our annotations bounded elsewhere: the CA bundle (above) and the volume policy's shorthand.
const UNBOUNDED_HERE: [&str; 2] = ["cacert_bytes", "import"];
/// Containers `skip-mutate-containers` may name: a pod has few.
pub const MAX_SKIPPED_CONTAINERS: usize = 64;

/// The containers `skip-mutate-containers` names: separated by spaces, as Deckhouse writes
/// them, or commas.
fn skipped_containers(
    pod: &Value,
    invalid: &dyn Fn(String) -> Refusal,
) -> Result<std::collections::HashSet<String>, Refusal> {
    let names: Vec<&str> = annotations::get(pod, "skip-mutate-containers")
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|name| !name.is_empty())
        .take(MAX_SKIPPED_CONTAINERS + 1)
        .collect();
    if names.len() > MAX_SKIPPED_CONTAINERS {
        return Err(invalid(format!(
            "annotation {PREFIX}skip-mutate-containers names more than {MAX_SKIPPED_CONTAINERS} containers"
        )));
    }
    Ok(names.into_iter().map(str::to_owned).collect())
}

/// A pod's injection annotations, typed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionRequest {
    /// `metadata.name` (or `generateName`), for messages.
    pub pod_name: String,
    /// Where and as what the injector logs in: the `role`, `auth-method` and `auth-path`
    /// annotations with the webhook's defaults (resolved as the injector resolves them), and
    /// the store: the `addr` annotation or the webhook's default. `None` for a pod annotated
    /// `on-file-change` alone: its injector reads nothing from the store.
    pub store: Option<(ssi_core::Login, String)>,
    /// The `on-file-change` annotation: what the app gets when its secrets-store files rotate.
    pub on_file_change: Option<FileReaction>,
    /// The `namespace` annotation: the store namespace (not a Kubernetes one).
    pub namespace: Option<String>,
    /// Paths whose every key becomes a variable; when set, every container is injected.
    pub env_from_path: Option<String>,
    /// Name of a Secret with the store's `ca.crt`.
    pub tls_secret: Option<String>,
    /// The store's CA bundle as PEM: the `cacert_bytes` annotation or the webhook's default;
    /// unused when `tls_secret` is set.
    pub ca_pem: Option<String>,
    /// The `tls-skip-verify` annotation: the injector does not verify the store's certificate.
    pub tls_skip_verify: Option<bool>,
    /// The `ignore-missing-secrets` annotation: start the app even if a path is missing (404).
    pub ignore_missing_secrets: Option<bool>,
    /// The `enable-json-log` annotation: the injector logs JSON.
    pub json_log: Option<bool>,
    /// A duration as written (checked).
    pub client_timeout: Option<String>,
    /// The `log-level` annotation, one of the injector's levels.
    pub log_level: Option<String>,
    /// The `restart-on-secret-change` annotation; [`RestartMode::None`] when absent.
    pub mode: RestartMode,
    /// A duration as written (checked); used by `watch-for-data` only.
    pub poll_interval: Option<String>,
    /// Where the app's own token is; `None`: the projected token the webhook adds.
    pub token_path: Option<String>,
    /// Containers named in `skip-mutate-containers`, left as written.
    pub skip_containers: std::collections::HashSet<String>,
    /// The `mutate-probes` annotation: exec probes also start through the injector.
    pub mutate_probes: bool,
}

impl InjectionRequest {
    /// `None` when the pod does not ask for injection (neither a `role` nor an
    /// `on-file-change` annotation).
    pub fn parse(
        pod: &Value,
        settings: &InjectorSettings,
    ) -> Result<Option<InjectionRequest>, Refusal> {
        let role = annotations::get(pod, "role");
        let reaction = annotations::get(pod, "on-file-change");
        if role.is_none() && reaction.is_none() {
            return Ok(None);
        }
        // The Deckhouse webhook's own opt-out, honoured for injection (never for the volume
        // policy, which an object cannot switch off).
        if annotations::label(pod, DECKHOUSE_OPT_OUT_LABEL) == Some("skip")
            || annotations::label(pod, OPT_OUT_LABEL) == Some("disabled")
        {
            return Ok(None);
        }
        let pod_name = pod
            .get("metadata")
            .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>");
        // Quoted in every message about the pod: its author chose how long it is.
        let pod_name = shown(pod_name, 64).into_owned();
        let owner = format!("Pod {pod_name}");
        let invalid = |what: String| Refusal::Invalid(format!("{owner}: {what}"));
        // Each setting is copied into every injected container: its size is bounded here, the
        // product in `inject` (the CA bundle has its own bound).
        if let Some(annotations) = pod
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(Value::as_object)
        {
            let too_long = annotations.iter().find(|(key, value)| {
                key.strip_prefix(PREFIX)
                    .is_some_and(|name| !UNBOUNDED_HERE.contains(&name))
                    && value.as_str().is_some_and(|v| v.len() > MAX_SETTING_BYTES)
            });
            if let Some((key, _)) = too_long {
                return Err(invalid(format!(
                    "annotation {:?} is longer than {MAX_SETTING_BYTES} bytes",
                    shown(key, 128)
                )));
            }
        }
        let text = |name: &str| {
            annotations::get(pod, name)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        let duration = |name: &str| -> Result<Option<String>, Refusal> {
            match text(name) {
                Some(value) => match parse_duration(value.as_str()) {
                    Ok(_) => Ok(Some(value)),
                    Err(e) => Err(invalid(format!("annotation {PREFIX}{name}: {e}"))),
                },
                None => Ok(None),
            }
        };

        let on_file_change = match reaction {
            None => None,
            Some(text) => Some(
                FileReaction::parse(text)
                    .map_err(|why| invalid(format!("annotation {PREFIX}on-file-change: {why}")))?,
            ),
        };
        let store = match role {
            None => None,
            Some(role) => Some(Self::store(pod, role.trim(), settings, &invalid)?),
        };
        let ca_pem = match text("cacert_bytes") {
            Some(pem) => {
                check_ca_pem(&pem)
                    .map_err(|why| invalid(format!("annotation {PREFIX}cacert_bytes {why}")))?;
                Some(pem)
            }
            None => settings.default_ca_pem.clone(),
        };
        let log_level = text("log-level");
        if let Some(level) = &log_level
            && !LOG_LEVELS.contains(&level.as_str())
        {
            return Err(invalid(format!(
                "annotation {PREFIX}log-level is {:?}; write {}",
                shown(level, 64),
                LOG_LEVELS.join(", ")
            )));
        }
        let mode = match annotations::get(pod, "restart-on-secret-change") {
            None => RestartMode::None,
            Some(text) => RestartMode::parse(text).ok_or_else(|| {
                invalid(format!(
                    "annotation {PREFIX}restart-on-secret-change is {:?}; write {}",
                    shown(text, 64),
                    RestartMode::choices()
                ))
            })?,
        };
        Ok(Some(InjectionRequest {
            store,
            on_file_change,
            namespace: text("namespace").or_else(|| settings.default_namespace.clone()),
            env_from_path: text("env-from-path"),
            tls_secret: annotations::get(pod, "tls-secret").map(str::to_owned),
            ca_pem,
            tls_skip_verify: annotations::flag(pod, "tls-skip-verify", &owner)?,
            ignore_missing_secrets: annotations::flag(pod, "ignore-missing-secrets", &owner)?,
            json_log: annotations::flag(pod, "enable-json-log", &owner)?,
            client_timeout: duration("client-timeout")?,
            log_level,
            mode,
            poll_interval: duration("secret-poll-interval")?,
            token_path: annotations::get(pod, "service-account-token-path").map(str::to_owned),
            // Deckhouse separates the names by spaces; commas work too.
            skip_containers: skipped_containers(pod, &invalid)?,
            mutate_probes: annotations::flag(pod, "mutate-probes", &owner)?.unwrap_or(false),
            pod_name,
        }))
    }

    /// The login and the store's address of a pod annotated with `role`.
    fn store(
        pod: &Value,
        role: &str,
        settings: &InjectorSettings,
        invalid: &dyn Fn(String) -> Refusal,
    ) -> Result<(ssi_core::Login, String), Refusal> {
        let text = |name: &str| {
            annotations::get(pod, name)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        if role.is_empty() {
            return Err(invalid(format!(
                "annotation {PREFIX}role is empty; name the role of the store's auth method"
            )));
        }
        let method = match text("auth-method") {
            None => None,
            Some(name) => Some(ssi_core::AuthMethod::parse(&name).ok_or_else(|| {
                let shown = ssi_core::names::shown(&name, 64);
                invalid(format!(
                    "annotation {PREFIX}auth-method is {shown:?}; write {}",
                    ssi_core::AuthMethod::choices()
                ))
            })?),
        };
        let login = ssi_core::Login::resolve(
            role,
            method,
            text("auth-path").as_deref(),
            &settings.default_login,
        );
        let address = text("addr")
            .or_else(|| settings.default_address.clone())
            .ok_or_else(|| {
                invalid(format!(
                    "no store address; set the annotation {PREFIX}addr (e.g. https://vault.example.com:8200)"
                ))
            })?;
        if !(address.starts_with("https://") || address.starts_with("http://")) {
            return Err(invalid(format!(
                "annotation {PREFIX}addr {:?} must be an http(s) URL",
                shown(&address, 128)
            )));
        }
        Ok((login, address))
    }

    /// Advice about annotations that have no effect as combined.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.poll_interval.is_some() && self.mode != RestartMode::WatchForData {
            warnings.push(format!(
                "Pod {}: annotation {PREFIX}secret-poll-interval has no effect without restart-on-secret-change: watch-for-data",
                self.pod_name
            ));
        }
        warnings
    }

    /// The injector's configuration, as the container variables the injector reads.
    pub fn injector_env(&self) -> Vec<Value> {
        let variable = |name: &str, value: &str| json!({"name": name, "value": value});
        let flag = |value: bool| if value { "true" } else { "false" };
        let mut env = Vec::new();
        if let Some(reaction) = &self.on_file_change {
            env.push(variable(contract::ENV_ON_FILE_CHANGE, &reaction.name()));
        }
        let Some((login, address)) = &self.store else {
            // Files watched only: nothing of the store, no token.
            if let Some(level) = &self.log_level {
                env.push(variable(contract::ENV_LOG_LEVEL, level));
            }
            return env;
        };
        env.push(variable(contract::ENV_ROLE, &login.role));
        env.push(variable(contract::ENV_ADDR, address));
        // Only what differs from the injector's own defaults, which resolve alike; the mount
        // too with another method, so that an older injector, which knows no method, logs in
        // at that method's mount rather than at Kubernetes'.
        let method = login.method;
        if method != ssi_core::AuthMethod::default() {
            env.push(variable(contract::ENV_AUTH_METHOD, method.name()));
        }
        if method != ssi_core::AuthMethod::default() || login.mount != method.default_mount() {
            env.push(variable(contract::ENV_AUTH_PATH, &login.mount));
        }
        for (name, value) in [
            (contract::ENV_NAMESPACE, &self.namespace),
            (contract::ENV_FROM_PATH, &self.env_from_path),
        ] {
            if let Some(value) = value {
                env.push(variable(name, value));
            }
        }
        for (name, value) in [
            (contract::ENV_SKIP_VERIFY, self.tls_skip_verify),
            (contract::ENV_IGNORE_MISSING, self.ignore_missing_secrets),
            (contract::ENV_JSON_LOG, self.json_log),
        ] {
            if let Some(value) = value {
                env.push(variable(name, flag(value)));
            }
        }
        if let Some(timeout) = &self.client_timeout {
            env.push(variable(contract::ENV_TIMEOUT, timeout));
        }
        if let Some(level) = &self.log_level {
            env.push(variable(contract::ENV_LOG_LEVEL, level));
        }
        if self.mode != RestartMode::None {
            env.push(variable(contract::ENV_MODE, self.mode.name()));
        }
        if let (RestartMode::WatchForData, Some(interval)) = (self.mode, &self.poll_interval) {
            env.push(variable(contract::ENV_POLL_INTERVAL, interval));
        }
        let token_path = self
            .token_path
            .clone()
            .unwrap_or_else(|| format!("{TOKEN_DIR}/token"));
        env.push(variable(contract::ENV_TOKEN_PATH, &token_path));
        if self.tls_secret.is_some() {
            env.push(variable(
                contract::ENV_CA_CERT,
                &format!("{TLS_DIR}/ca.crt"),
            ));
        } else if let Some(pem) = &self.ca_pem {
            env.push(variable(contract::ENV_CA_PEM, pem));
        }
        env
    }
}

/// Whether `pem` can be the store's CA bundle: PEM certificates, at most [`MAX_CA_PEM_BYTES`].
/// The reason otherwise, without the content.
pub fn check_ca_pem(pem: &str) -> Result<(), String> {
    if pem.len() > MAX_CA_PEM_BYTES {
        return Err(format!(
            "is larger than {MAX_CA_PEM_BYTES} bytes; a CA bundle is a few KiB"
        ));
    }
    crate::registry::ca_bundle(pem.as_bytes())
        .map(drop)
        .map_err(|_| "is not a PEM bundle of CERTIFICATE blocks".to_owned())
}
