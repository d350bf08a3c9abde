//! The contract between the webhook, which writes an injected container's settings, and the
//! injector, which reads them: where the binary is, how it is copied, the variables and the
//! modes. Both crates use these constants, so that neither can rename one alone.

/// The binary's path in the injector image.
pub const IMAGE_BINARY: &str = "/ssi-injector";
/// The init container's argument that makes the binary copy itself into a directory:
/// `/ssi-injector copy <dir>`.
pub const COPY_COMMAND: &str = "copy";
/// The file name of the copy in that directory.
pub const BINARY_NAME: &str = "ssi-injector";

/// Prefix of every configuration variable; all of them are removed from the application's
/// environment before it starts.
pub const ENV_PREFIX: &str = "SSI_INJECTOR_";
/// Store URL, `http://` or `https://` (annotation `addr`). Required.
pub const ENV_ADDR: &str = "SSI_INJECTOR_ADDR";
/// How the store checks the pod's token, `kubernetes` or `jwt` (`auth-method`); `kubernetes`
/// when unset.
pub const ENV_AUTH_METHOD: &str = "SSI_INJECTOR_AUTH_METHOD";
/// Mount path of the auth method (`auth-path`); the method's name when unset.
pub const ENV_AUTH_PATH: &str = "SSI_INJECTOR_AUTH_PATH";
/// Role of the auth method to log in as (`role`). Required.
pub const ENV_ROLE: &str = "SSI_INJECTOR_ROLE";
/// Vault Enterprise / OpenBao namespace (`namespace`).
pub const ENV_NAMESPACE: &str = "SSI_INJECTOR_NAMESPACE";
/// Path of a PEM file with the CA of the store's certificate (from `tls-secret`).
pub const ENV_CA_CERT: &str = "SSI_INJECTOR_CA_CERT";
/// The store's CA bundle itself (PEM), when no file is mounted: the webhook's cluster-wide
/// default or a pod's `cacert_bytes` annotation. A file from [`ENV_CA_CERT`] wins.
pub const ENV_CA_PEM: &str = "SSI_INJECTOR_CA_PEM";
/// `true`: do not verify the store's certificate (`tls-skip-verify`).
pub const ENV_SKIP_VERIFY: &str = "SSI_INJECTOR_TLS_SKIP_VERIFY";
/// Bound on each store request, like `10s` (`client-timeout`).
pub const ENV_TIMEOUT: &str = "SSI_INJECTOR_CLIENT_TIMEOUT";
/// `true`: a secret that does not exist (HTTP 404) leaves its variable out instead of
/// stopping the container (`ignore-missing-secrets`).
pub const ENV_IGNORE_MISSING: &str = "SSI_INJECTOR_IGNORE_MISSING_SECRETS";
/// Comma-separated secret paths whose every key becomes a variable (`env-from-path`).
pub const ENV_FROM_PATH: &str = "SSI_INJECTOR_ENV_FROM_PATH";
/// Path of the ServiceAccount token the injector logs in with.
pub const ENV_TOKEN_PATH: &str = "SSI_INJECTOR_TOKEN_PATH";
/// The injector's log level, one of [`LOG_LEVELS`] (`log-level`).
pub const ENV_LOG_LEVEL: &str = "SSI_INJECTOR_LOG_LEVEL";
/// `true`: the injector logs JSON lines (`enable-json-log`).
pub const ENV_JSON_LOG: &str = "SSI_INJECTOR_JSON_LOG";
/// A [`RestartMode`] by its [`name`](RestartMode::name) (`restart-on-secret-change`); unset
/// means `none`.
pub const ENV_MODE: &str = "SSI_INJECTOR_MODE";
/// How often `watch-for-data` re-reads the secrets (`secret-poll-interval`).
pub const ENV_POLL_INTERVAL: &str = "SSI_INJECTOR_POLL_INTERVAL";
/// How long the app gets between SIGTERM and SIGKILL when a watch mode restarts it.
pub const ENV_GRACE_PERIOD: &str = "SSI_INJECTOR_GRACE_PERIOD";
/// Comma-separated names of the `SSI_INJECTOR_*` variables the container's own `env` list sets
/// (the webhook's and the pod author's), set by the webhook. When it is set, the injector takes
/// no other: a ConfigMap or Secret in `envFrom`, which someone else may edit, cannot change how
/// it verifies the store or what it reads.
pub const ENV_SETTINGS: &str = "SSI_INJECTOR_SETTINGS";
/// What the app's process gets when the files of a secrets-store volume it mounts are rotated
/// (`on-file-change`): `signal:SIGHUP` (or another of the reload signals) or `restart`.
pub const ENV_ON_FILE_CHANGE: &str = "SSI_INJECTOR_ON_FILE_CHANGE";
/// Comma-separated mount paths of the container's secrets-store volumes, whose `..data` swap
/// the injector watches; set by the webhook.
pub const ENV_WATCH_DIRS: &str = "SSI_INJECTOR_WATCH_DIRS";

/// Signals an app may ask for at a rotation of its files, without the `SIG` prefix: the ones
/// apps use to reload (nginx, HAProxy, PostgreSQL: HUP; others USR1, USR2, WINCH). Not TERM,
/// INT or QUIT, which stop most apps (`restart` does that, and starts the app again), nor KILL
/// or STOP.
pub const RELOAD_SIGNALS: [&str; 4] = ["HUP", "USR1", "USR2", "WINCH"];

/// What the injector does when the files of a secrets-store volume the app mounts are rotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileReaction {
    /// `signal:SIGHUP` (or `signal:HUP`): sends the app that signal, one of [`RELOAD_SIGNALS`];
    /// held here without its prefix.
    Signal(String),
    /// `restart`: stops the app (SIGTERM, then SIGKILL after the grace period) and starts it
    /// again in the same container: the pod, its volumes and its leases stay.
    Restart,
}

impl FileReaction {
    /// The reaction `text` names, or what to write instead.
    pub fn parse(text: &str) -> Result<FileReaction, String> {
        if text == "restart" {
            return Ok(FileReaction::Restart);
        }
        let wrong = || {
            let shown = crate::names::shown(text, 64);
            format!(
                "{shown:?} is no reaction; write restart or signal:<name> with one of SIG{}",
                RELOAD_SIGNALS.join(", SIG")
            )
        };
        let name = text.strip_prefix("signal:").ok_or_else(wrong)?;
        let bare = name.strip_prefix("SIG").unwrap_or(name);
        match RELOAD_SIGNALS.contains(&bare) {
            true => Ok(FileReaction::Signal(bare.to_owned())),
            false => Err(wrong()),
        }
    }

    /// The spelling [`FileReaction::parse`] reads: `restart`, `signal:SIGHUP`.
    pub fn name(&self) -> String {
        match self {
            FileReaction::Restart => "restart".to_owned(),
            FileReaction::Signal(name) => format!("signal:SIG{name}"),
        }
    }
}

/// What the injector does once the environment is resolved (`restart-on-secret-change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// `none`: exec the application; no process of ours stays.
    None,
    /// `watch-for-data`: supervise it, restart it when a value changes.
    WatchForData,
    /// `watch-for-lease`: supervise it, restart it before a lease ends.
    WatchForLease,
}

impl RestartMode {
    /// Every mode, in the order messages list them.
    pub const ALL: [RestartMode; 3] = [
        RestartMode::None,
        RestartMode::WatchForData,
        RestartMode::WatchForLease,
    ];

    /// The annotation's and the variable's spelling.
    pub fn name(self) -> &'static str {
        match self {
            RestartMode::None => "none",
            RestartMode::WatchForData => "watch-for-data",
            RestartMode::WatchForLease => "watch-for-lease",
        }
    }

    /// The mode spelled `text`, as [`name`](RestartMode::name) gives it; `None` for anything else.
    pub fn parse(text: &str) -> Option<RestartMode> {
        RestartMode::ALL
            .into_iter()
            .find(|mode| mode.name() == text)
    }

    /// "none, watch-for-data or watch-for-lease", for messages that say what to write.
    pub fn choices() -> String {
        let names: Vec<&str> = RestartMode::ALL.iter().map(|mode| mode.name()).collect();
        format!(
            "{} or {}",
            names[..names.len() - 1].join(", "),
            names[names.len() - 1]
        )
    }
}

/// Log levels the injector knows (`log-level`).
pub const LOG_LEVELS: [&str; 4] = ["error", "warn", "info", "debug"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_and_name_their_choices() {
        for mode in RestartMode::ALL {
            assert_eq!(RestartMode::parse(mode.name()), Some(mode));
        }
        assert_eq!(RestartMode::parse("always"), None);
        assert_eq!(
            RestartMode::choices(),
            "none, watch-for-data or watch-for-lease"
        );
    }

    #[test]
    fn file_reactions_round_trip_and_name_what_to_write() {
        assert_eq!(FileReaction::parse("restart"), Ok(FileReaction::Restart));
        for text in ["signal:SIGHUP", "signal:HUP"] {
            let reaction = FileReaction::parse(text).unwrap();
            assert_eq!(reaction, FileReaction::Signal("HUP".into()));
            assert_eq!(reaction.name(), "signal:SIGHUP");
        }
        for bad in [
            "signal:SIGKILL",
            "signal:",
            "SIGHUP",
            "reload",
            "signal:sighup",
        ] {
            let error = FileReaction::parse(bad).unwrap_err();
            assert!(error.contains("write restart or signal:<name>"), "{error}");
        }
    }

    #[test]
    fn every_variable_has_the_prefix() {
        for name in [
            ENV_ADDR,
            ENV_AUTH_PATH,
            ENV_ROLE,
            ENV_NAMESPACE,
            ENV_CA_CERT,
            ENV_CA_PEM,
            ENV_SKIP_VERIFY,
            ENV_TIMEOUT,
            ENV_IGNORE_MISSING,
            ENV_FROM_PATH,
            ENV_TOKEN_PATH,
            ENV_LOG_LEVEL,
            ENV_JSON_LOG,
            ENV_ON_FILE_CHANGE,
            ENV_WATCH_DIRS,
            ENV_MODE,
            ENV_POLL_INTERVAL,
            ENV_GRACE_PERIOD,
        ] {
            assert!(name.starts_with(ENV_PREFIX), "{name}");
        }
    }
}
