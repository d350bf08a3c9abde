//! The injector's configuration: `SSI_INJECTOR_*` variables the webhook sets on the container.
//! All of them are removed from the application's environment before it starts.

use ssi_core::duration::parse_duration;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

pub use ssi_core::injector::FileReaction;
use ssi_core::injector::RestartMode;
pub use ssi_core::injector::{
    ENV_ADDR, ENV_AUTH_METHOD, ENV_AUTH_PATH, ENV_CA_CERT, ENV_CA_PEM, ENV_FROM_PATH,
    ENV_GRACE_PERIOD, ENV_IGNORE_MISSING, ENV_JSON_LOG, ENV_LOG_LEVEL, ENV_MODE, ENV_NAMESPACE,
    ENV_ON_FILE_CHANGE, ENV_POLL_INTERVAL, ENV_PREFIX, ENV_ROLE, ENV_SETTINGS, ENV_SKIP_VERIFY,
    ENV_TIMEOUT, ENV_TOKEN_PATH, ENV_WATCH_DIRS,
};

/// How often `watch-for-data` re-reads the secrets unless told (the CSI driver's rotation period).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(120);
/// How long the app gets between SIGTERM and SIGKILL when the injector restarts it.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Where a projected ServiceAccount token is, unless the pod says otherwise.
pub const DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The injector's settings, read from the `SSI_INJECTOR_*` variables by [`Config::from_env`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The store and the login, `None` for a container that only has its files watched
    /// (neither `SSI_INJECTOR_ADDR` nor `SSI_INJECTOR_ROLE`, and `SSI_INJECTOR_ON_FILE_CHANGE`).
    pub store: Option<StoreAccess>,
    /// What the app gets when a watched volume's files are rotated.
    pub on_file_change: Option<FileReaction>,
    /// The mount paths of the container's secrets-store volumes.
    pub watch_dirs: Vec<PathBuf>,
    /// Vault Enterprise / OpenBao namespace.
    pub namespace: Option<String>,
    /// PEM file with the CA of the store's certificate, instead of the system's.
    pub ca_cert: Option<PathBuf>,
    /// The CA bundle as PEM text, used when `ca_cert` is not set.
    pub ca_pem: Option<String>,
    /// Accept any store certificate.
    pub skip_tls_verify: bool,
    /// Bound on each store request; 10 s by default.
    pub timeout: Duration,
    /// Leave out the variables of secrets that do not exist (HTTP 404) instead of failing.
    pub ignore_missing: bool,
    /// Secret paths whose every key becomes a variable, in order (later ones win).
    pub env_from_paths: Vec<String>,
    /// The ServiceAccount token to log in with; [`DEFAULT_TOKEN_PATH`] by default.
    pub token_path: PathBuf,
    /// Least severe level that is logged.
    pub log_level: LogLevel,
    /// Log JSON lines instead of text.
    pub json_log: bool,
    /// Exec the app, or supervise it.
    pub mode: Mode,
    /// Time between SIGTERM and SIGKILL when the app is restarted; [`DEFAULT_GRACE_PERIOD`] by
    /// default.
    pub grace_period: Duration,
}

/// Where the injector reads secrets, and as what.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreAccess {
    /// Store URL, http(s) (`SSI_INJECTOR_ADDR`).
    pub address: Url,
    /// Where and as what the pod logs in: the method (`kubernetes` by default), its mount (the
    /// method's name by default) and the role.
    pub login: ssi_core::Login,
}

/// What the injector does once the environment is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `exec` the app: it becomes PID 1 and the injector is gone.
    Exec,
    /// Stay PID 1, re-read the secrets every `interval` (+-30%) and restart the container
    /// when what the app was given has changed.
    WatchForData {
        /// Mean time between reads; [`DEFAULT_POLL_INTERVAL`] by default.
        interval: Duration,
    },
    /// Stay PID 1, renew the leases of the secrets the app was given and restart the container
    /// before one ends.
    WatchForLease,
}

/// How much the injector logs (`SSI_INJECTOR_LOG_LEVEL`); ordered from least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and what may need attention.
    Warn,
    /// Also what the injector did; the default.
    Info,
    /// Also details for troubleshooting.
    Debug,
}

impl Config {
    /// Reads the configuration from `vars`; every problem is reported at once, naming the
    /// variable and what it accepts.
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Config, String> {
        let mut problems = Vec::new();
        // Only the settings the container's own env list sets, when the webhook says which.
        let listed: Option<Vec<&str>> = vars
            .get(ENV_SETTINGS)
            .map(|names| names.split(',').map(str::trim).collect());
        let get = |name: &str| {
            if listed.as_ref().is_some_and(|names| !names.contains(&name)) {
                return None;
            }
            vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
        };
        let mut flag = |name: &str| match get(name) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                problems.push(format!("{name}={other:?} must be true or false"));
                false
            }
        };
        let skip_tls_verify = flag(ENV_SKIP_VERIFY);
        let ignore_missing = flag(ENV_IGNORE_MISSING);
        let json_log = flag(ENV_JSON_LOG);

        let on_file_change = get(ENV_ON_FILE_CHANGE).and_then(|text| {
            FileReaction::parse(text)
                .map_err(|e| problems.push(format!("{ENV_ON_FILE_CHANGE}: {e}")))
                .ok()
        });
        let watch_dirs: Vec<PathBuf> = get(ENV_WATCH_DIRS)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|dir| !dir.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        let files_only =
            on_file_change.is_some() && get(ENV_ADDR).is_none() && get(ENV_ROLE).is_none();
        let address = match get(ENV_ADDR).map(Url::parse) {
            Some(Ok(url)) if matches!(url.scheme(), "http" | "https") => Some(url),
            Some(Ok(url)) => {
                problems.push(format!("{ENV_ADDR}={url} must be an http(s) URL"));
                None
            }
            Some(Err(e)) => {
                problems.push(format!("{ENV_ADDR} is not a URL: {e}"));
                None
            }
            None if files_only => None,
            None => {
                problems.push(format!(
                    "{ENV_ADDR} is not set (the store address, e.g. https://vault.example.com:8200)"
                ));
                None
            }
        };
        let role = get(ENV_ROLE).map(str::to_owned);
        if role.is_none() && !files_only {
            problems.push(format!(
                "{ENV_ROLE} is not set (the role of the store's auth method)"
            ));
        }
        let method = get(ENV_AUTH_METHOD).and_then(|text| {
            let method = ssi_core::AuthMethod::parse(text);
            if method.is_none() {
                problems.push(format!(
                    "{ENV_AUTH_METHOD}={text:?} must be {}",
                    ssi_core::AuthMethod::choices()
                ));
            }
            method
        });
        let timeout = match get(ENV_TIMEOUT).map(parse_duration) {
            None => Duration::from_secs(10),
            Some(Ok(timeout)) => timeout,
            Some(Err(e)) => {
                problems.push(format!("{ENV_TIMEOUT}: {e}"));
                Duration::ZERO
            }
        };
        let log_level = match get(ENV_LOG_LEVEL) {
            None | Some("info") => LogLevel::Info,
            Some("error") => LogLevel::Error,
            Some("warn") => LogLevel::Warn,
            Some("debug") => LogLevel::Debug,
            Some(other) => {
                problems.push(format!(
                    "{ENV_LOG_LEVEL}={other:?} must be error, warn, info or debug"
                ));
                LogLevel::Info
            }
        };
        let mut duration = |name: &str, default: Duration| match get(name).map(parse_duration) {
            None => default,
            Some(Ok(value)) => value,
            Some(Err(e)) => {
                problems.push(format!("{name}: {e}"));
                default
            }
        };
        let interval = duration(ENV_POLL_INTERVAL, DEFAULT_POLL_INTERVAL);
        let grace_period = duration(ENV_GRACE_PERIOD, DEFAULT_GRACE_PERIOD);
        let mode = match get(ENV_MODE).map(|text| (text, RestartMode::parse(text))) {
            None | Some((_, Some(RestartMode::None))) => Mode::Exec,
            Some((_, Some(RestartMode::WatchForData))) => Mode::WatchForData { interval },
            Some((_, Some(RestartMode::WatchForLease))) => Mode::WatchForLease,
            Some((other, None)) => {
                problems.push(format!(
                    "{ENV_MODE}={other:?} must be {}",
                    RestartMode::choices()
                ));
                Mode::Exec
            }
        };
        let env_from_paths = get(ENV_FROM_PATH)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let store = address.zip(role).map(|(address, role)| StoreAccess {
            address,
            login: ssi_core::Login::resolve(&role, method, get(ENV_AUTH_PATH), &Default::default()),
        });
        Ok(Config {
            store,
            on_file_change,
            watch_dirs,
            namespace: get(ENV_NAMESPACE).map(str::to_owned),
            ca_cert: get(ENV_CA_CERT).map(PathBuf::from),
            ca_pem: get(ENV_CA_PEM).map(str::to_owned),
            skip_tls_verify,
            timeout,
            ignore_missing,
            env_from_paths,
            token_path: PathBuf::from(get(ENV_TOKEN_PATH).unwrap_or(DEFAULT_TOKEN_PATH)),
            log_level,
            json_log,
            mode,
            grace_period,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_and_lists() {
        let config = Config::from_env(&vars(&[
            (ENV_ADDR, "https://vault.example.com:8200"),
            (ENV_ROLE, "backend"),
            (ENV_FROM_PATH, "secret/data/a, secret/data/b,"),
        ]))
        .unwrap();
        let login = &config.store.as_ref().unwrap().login;
        assert_eq!(login.method, ssi_core::AuthMethod::Kubernetes);
        assert_eq!(login.mount, "kubernetes");
        assert_eq!(login.role, "backend");
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.token_path, PathBuf::from(DEFAULT_TOKEN_PATH));
        assert_eq!(config.env_from_paths, ["secret/data/a", "secret/data/b"]);
        assert!(!config.ignore_missing && !config.skip_tls_verify);
        assert_eq!(config.mode, Mode::Exec);
        assert_eq!(config.grace_period, DEFAULT_GRACE_PERIOD);
    }

    #[test]
    fn a_container_that_only_has_its_files_watched_needs_no_store() {
        let config = Config::from_env(&vars(&[
            (ENV_ON_FILE_CHANGE, "signal:SIGHUP"),
            (ENV_WATCH_DIRS, "/mnt/secrets, /etc/tls"),
        ]))
        .unwrap();
        assert_eq!(config.store, None);
        assert_eq!(
            config.on_file_change,
            Some(FileReaction::Signal("HUP".into()))
        );
        assert_eq!(
            config.watch_dirs,
            // host path: parsed only, never opened.
            [PathBuf::from("/mnt/secrets"), PathBuf::from("/etc/tls")]
        );
        // Without a reaction the store is what the injector is for: both are asked for.
        let error = Config::from_env(&vars(&[(ENV_WATCH_DIRS, "/mnt/secrets")])).unwrap_err();
        assert!(
            error.contains(ENV_ADDR) && error.contains(ENV_ROLE),
            "{error}"
        );
        let error = Config::from_env(&vars(&[(ENV_ON_FILE_CHANGE, "signal:KILL")])).unwrap_err();
        assert!(error.contains("no reaction"), "{error}");
    }

    #[test]
    fn jwt_logs_in_at_its_own_mount_unless_told_and_a_wrong_method_is_named() {
        let base = [
            (ENV_ADDR, "https://vault.example.com:8200"),
            (ENV_ROLE, "backend"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            Config::from_env(&vars(&[&base[..], extra].concat()))
        };
        let login = |config: Config| config.store.unwrap().login;
        let jwt = login(with(&[(ENV_AUTH_METHOD, "jwt")]).unwrap());
        assert_eq!(
            (jwt.method, jwt.mount.as_str()),
            (ssi_core::AuthMethod::Jwt, "jwt")
        );
        let elsewhere =
            login(with(&[(ENV_AUTH_METHOD, "jwt"), (ENV_AUTH_PATH, "cluster-b")]).unwrap());
        assert_eq!(elsewhere.mount, "cluster-b");
        let error = with(&[(ENV_AUTH_METHOD, "oidc")]).unwrap_err();
        assert!(
            error.contains("SSI_INJECTOR_AUTH_METHOD=\"oidc\" must be kubernetes or jwt"),
            "{error}"
        );
    }

    #[test]
    fn with_the_webhooks_list_only_the_listed_settings_count() {
        // What a ConfigMap in envFrom could add: not in the list the webhook wrote.
        let config = Config::from_env(&vars(&[
            (ENV_ADDR, "https://vault.example.com:8200"),
            (ENV_ROLE, "backend"),
            (ENV_SKIP_VERIFY, "true"),
            (ENV_CA_PEM, "-----BEGIN CERTIFICATE-----"),
            (ENV_FROM_PATH, "secret/data/other"),
            (ENV_SETTINGS, "SSI_INJECTOR_ADDR,SSI_INJECTOR_ROLE"),
        ]))
        .unwrap();
        assert!(!config.skip_tls_verify);
        assert!(config.env_from_paths.is_empty());
        // Listed, they count.
        let config = Config::from_env(&vars(&[
            (ENV_ADDR, "https://vault.example.com:8200"),
            (ENV_ROLE, "backend"),
            (ENV_SKIP_VERIFY, "true"),
            (
                ENV_SETTINGS,
                "SSI_INJECTOR_ADDR, SSI_INJECTOR_ROLE, SSI_INJECTOR_TLS_SKIP_VERIFY",
            ),
        ]))
        .unwrap();
        assert!(config.skip_tls_verify);
    }

    #[test]
    fn watch_modes() {
        let base = [
            (ENV_ADDR, "https://vault.example.com:8200"),
            (ENV_ROLE, "backend"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            Config::from_env(&vars(&[&base[..], extra].concat()))
        };
        assert_eq!(
            with(&[(ENV_MODE, "watch-for-data")]).unwrap().mode,
            Mode::WatchForData {
                interval: DEFAULT_POLL_INTERVAL
            }
        );
        assert_eq!(
            with(&[(ENV_MODE, "watch-for-data"), (ENV_POLL_INTERVAL, "30s")])
                .unwrap()
                .mode,
            Mode::WatchForData {
                interval: Duration::from_secs(30)
            }
        );
        assert_eq!(
            with(&[(ENV_MODE, "watch-for-lease")]).unwrap().mode,
            Mode::WatchForLease
        );
        let error = with(&[(ENV_MODE, "poll"), (ENV_GRACE_PERIOD, "0s")]).unwrap_err();
        assert!(
            error.contains(ENV_MODE) && error.contains(ENV_GRACE_PERIOD),
            "{error}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let error = Config::from_env(&vars(&[
            (ENV_ADDR, "vault:8200"),
            (ENV_TIMEOUT, "10"),
            (ENV_IGNORE_MISSING, "yes"),
        ]))
        .unwrap_err();
        for part in [ENV_ADDR, ENV_ROLE, ENV_TIMEOUT, ENV_IGNORE_MISSING] {
            assert!(error.contains(part), "{part} missing from {error}");
        }
    }
}
