//! From the container's environment to the application's: which secrets to read, and the
//! environment rendered from what was read. Pure; the reads happen in [`crate::Store::fetch_all`].

use crate::config::ENV_PREFIX;
use crate::reference::{self, Key, Part, Reference, TemplatePart};
use ssi_vault::SecretValue;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// A secret's fields, or the store's 404.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// The secret's fields by name.
    Found(BTreeMap<String, SecretValue>),
    /// The store answered 404: no secret at the path (or not that version).
    Missing,
}

/// One request to the store, done once however many variables use it: a read of a path (for
/// KV v2 a version, `None` = latest), or a write of a JSON body to a path (`>>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Read {
    /// API path below `/v1/`.
    pub path: String,
    /// KV v2 version of a read; `None` for the latest (and for writes).
    pub version: Option<u64>,
    /// The canonical JSON body of a write; `None` for a read.
    pub write: Option<String>,
}

impl Read {
    /// A read of the latest version of `path`.
    pub fn latest(path: &str) -> Read {
        Read {
            path: path.to_owned(),
            version: None,
            write: None,
        }
    }

    /// An `env-from-path` entry: `<path>` or, as in Deckhouse, `<path>#<version>`.
    pub fn env_from(entry: &str) -> Read {
        match entry.rsplit_once('#') {
            Some((path, version))
                if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Read {
                    version: version.parse().ok(),
                    ..Read::latest(path)
                }
            }
            _ => Read::latest(entry),
        }
    }

    fn of(reference: &Reference) -> Read {
        Read {
            path: reference.path.clone(),
            version: reference.version,
            write: reference.write.clone(),
        }
    }
}

#[derive(Debug)]
enum Entry {
    Keep(OsString),
    Resolve(reference::Value),
}

/// What the environment asks for.
#[derive(Debug)]
pub struct Plan {
    entries: Vec<(OsString, Entry)>,
    env_from_paths: Vec<String>,
    /// Every distinct read, each done once however many variables use it.
    pub reads: BTreeSet<Read>,
    /// Whether a variable asks for the store token (`secrets-store:login`).
    pub needs_token: bool,
}

/// Parses every variable of `env` (the injector's own configuration dropped) and collects the
/// reads. `Err` names the variable and what is wrong with its reference.
pub fn plan(
    env: impl IntoIterator<Item = (OsString, OsString)>,
    env_from_paths: &[String],
) -> Result<Plan, String> {
    let mut entries = Vec::new();
    let mut reads = BTreeSet::new();
    let mut needs_token = false;
    let mut problems = Vec::new();
    for (name, value) in env {
        if name.as_bytes().starts_with(ENV_PREFIX.as_bytes()) {
            continue;
        }
        let Some(text) = value.to_str() else {
            entries.push((name, Entry::Keep(value)));
            continue;
        };
        match reference::parse_value(text) {
            Ok(reference::Value::Plain) => entries.push((name, Entry::Keep(value))),
            Ok(reference::Value::Login) if name != reference::LOGIN_VARIABLE => {
                problems.push(format!(
                    "env {}: secrets-store:login gives the store token to {} only, as the \
                     Deckhouse injector does; name the variable {}",
                    name.to_string_lossy(),
                    reference::LOGIN_VARIABLE,
                    reference::LOGIN_VARIABLE
                ));
            }
            Ok(parsed) => {
                needs_token |= parsed == reference::Value::Login;
                for reference in references(&parsed) {
                    reads.insert(Read::of(reference));
                }
                entries.push((name, Entry::Resolve(parsed)));
            }
            Err(e) => problems.push(format!("env {}: {e}", name.to_string_lossy())),
        }
    }
    for path in env_from_paths {
        reads.insert(Read::env_from(path));
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(Plan {
        entries,
        env_from_paths: env_from_paths.to_vec(),
        reads,
        needs_token,
    })
}

fn references(value: &reference::Value) -> Vec<&Reference> {
    match value {
        reference::Value::Plain | reference::Value::Login => Vec::new(),
        reference::Value::Whole(reference) => vec![reference],
        reference::Value::Interpolated(parts) => parts
            .iter()
            .filter_map(|part| match part {
                Part::Reference(reference) => Some(reference),
                Part::Text(_) => None,
            })
            .collect(),
    }
}

/// The rendered environment, plus notices for the log (names and paths only).
#[derive(Debug)]
pub struct Rendered {
    /// The application's environment, references replaced and our configuration removed.
    pub env: Vec<(OsString, OsString)>,
    /// What was left out under `ignore-missing-secrets`, one line each.
    pub notices: Vec<String>,
}

/// Renders the application's environment. A reference to a missing secret (404) fails, unless
/// `ignore_missing`, which leaves that variable out; any other problem always fails: the app
/// never starts with an unresolved reference. `store_token` fills `secrets-store:login`.
pub fn render(
    plan: Plan,
    fetched: &HashMap<Read, Fetched>,
    store_token: Option<&str>,
    ignore_missing: bool,
) -> Result<Rendered, String> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut notices = Vec::new();
    let mut problems = Vec::new();
    // The container's own values (its image's and its spec's, references included):
    // env-from-path never replaces them.
    let mut own = std::collections::HashSet::new();
    for (name, entry) in plan.entries {
        own.insert(name.clone());
        let parsed = match entry {
            Entry::Keep(value) => {
                env.push((name, value));
                continue;
            }
            Entry::Resolve(parsed) => parsed,
        };
        let shown = name.to_string_lossy().into_owned();
        match render_value(&parsed, fetched, store_token) {
            Ok(value) => env.push((name, OsString::from_vec(value))),
            Err(Problem::Missing(path)) if ignore_missing => notices.push(format!(
                "env {shown} left out: secret {path} does not exist (ignore-missing-secrets)"
            )),
            Err(Problem::Missing(path)) => problems.push(format!(
                "env {shown}: secret {path} does not exist (set secrets-store.deckhouse.io/ignore-missing-secrets: \"true\" to start without it)"
            )),
            Err(Problem::Other(e)) => problems.push(format!("env {shown}: {e}")),
        }
    }
    for path in &plan.env_from_paths {
        match fetched.get(&Read::env_from(path)) {
            Some(Fetched::Found(fields)) => {
                for (key, value) in fields {
                    if key.is_empty() || key.contains(['=', '\0']) {
                        problems.push(format!(
                            "env-from-path {path}: key {key:?} cannot be an environment variable name"
                        ));
                        continue;
                    }
                    if value.expose().contains(&0) {
                        problems.push(format!(
                            "env-from-path {path}: the value of {key} contains a NUL byte"
                        ));
                        continue;
                    }
                    if changes_what_runs(key) {
                        problems.push(format!(
                            "env-from-path {path}: key {key:?} is refused: it changes what the \
                             process loads or runs; rename it in the store, or reference it in \
                             the container's env if it is meant"
                        ));
                        continue;
                    }
                    if own.contains(OsStr::new(key.as_str())) {
                        notices.push(format!(
                            "env-from-path {path}: {key} is set by the container itself; its own value is kept"
                        ));
                        continue;
                    }
                    env.retain(|(name, _)| name.as_bytes() != key.as_bytes());
                    env.push((key.into(), OsStr::from_bytes(value.expose()).to_owned()));
                }
            }
            Some(Fetched::Missing) if ignore_missing => notices.push(format!(
                "env-from-path {path} skipped: the secret does not exist (ignore-missing-secrets)"
            )),
            _ => problems.push(format!("env-from-path {path}: the secret does not exist")),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(Rendered { env, notices })
}

/// Variables a secret's key may not set through env-from-path: those that change which code
/// the process loads or runs (the loader's, interpreters' and the JVM's), and ours. A store
/// secret is written by whoever may write that path, not by the pod's author.
fn changes_what_runs(name: &str) -> bool {
    // Only plain names: `BASH_FUNC_x%%` (a bash function) and the like are none.
    let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain {
        return true;
    }
    const EXACT: [&str; 32] = [
        "IFS",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "PROMPT_COMMAND",
        "CLASSPATH",
        "PERLLIB",
        "PERL5DB",
        "PYTHONWARNINGS",
        "PYTHONINSPECT",
        "GLIBC_TUNABLES",
        "NODE_EXTRA_CA_CERTS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "PATH",
        "ENV",
        "BASH_ENV",
        "GCONV_PATH",
        "HOSTALIASES",
        "LOCPATH",
        "NODE_OPTIONS",
        "NODE_PATH",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PERL5OPT",
        "PERL5LIB",
        "RUBYOPT",
        "RUBYLIB",
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
    ];
    let upper = name.to_ascii_uppercase();
    EXACT.contains(&upper.as_str())
        || upper == "_JAVA_OPTIONS"
        || upper.starts_with("LD_")
        || upper.starts_with("DYLD_")
        || upper.starts_with("MALLOC_")
        || upper.starts_with("SSL_CERT_")
        || upper.starts_with(ENV_PREFIX)
}

enum Problem {
    Missing(String),
    Other(String),
}

fn render_value(
    value: &reference::Value,
    fetched: &HashMap<Read, Fetched>,
    store_token: Option<&str>,
) -> Result<Vec<u8>, Problem> {
    let mut out = Vec::new();
    match value {
        reference::Value::Plain => {}
        reference::Value::Login => match store_token {
            Some(token) => out.extend_from_slice(token.as_bytes()),
            None => return Err(Problem::Other("the store token was not obtained".into())),
        },
        reference::Value::Whole(reference) => out.extend(resolve(reference, fetched)?),
        reference::Value::Interpolated(parts) => {
            for part in parts {
                match part {
                    Part::Text(text) => out.extend_from_slice(text.as_bytes()),
                    Part::Reference(reference) => out.extend(resolve(reference, fetched)?),
                }
            }
        }
    }
    if out.contains(&0) {
        return Err(Problem::Other(
            "the resolved value contains a NUL byte, which an environment variable cannot hold"
                .into(),
        ));
    }
    Ok(out)
}

fn resolve(reference: &Reference, fetched: &HashMap<Read, Fetched>) -> Result<Vec<u8>, Problem> {
    let shown = match (reference.version, &reference.write) {
        (Some(version), _) => format!("{} (version {version})", reference.path),
        (None, Some(_)) => format!("{} (written)", reference.path),
        (None, None) => reference.path.clone(),
    };
    let fields = match fetched.get(&Read::of(reference)) {
        Some(Fetched::Found(fields)) => fields,
        Some(Fetched::Missing) => return Err(Problem::Missing(shown)),
        None => return Err(Problem::Other(format!("secret {shown} was not read"))),
    };
    let field = |key: &str| {
        fields.get(key).map(|v| v.expose().to_vec()).ok_or_else(|| {
            // The store names the keys: quoted and bounded, they cannot shape the message.
            const SHOWN_KEYS: usize = 20;
            let mut available: Vec<String> = fields
                .keys()
                .take(SHOWN_KEYS)
                .map(|k| format!("{:?}", k.chars().take(64).collect::<String>()))
                .collect();
            if fields.len() > SHOWN_KEYS {
                available.push(format!("and {} more", fields.len() - SHOWN_KEYS));
            }
            Problem::Other(format!(
                "secret {shown} has no key {key:?} (keys: {})",
                available.join(", ")
            ))
        })
    };
    match &reference.key {
        Key::Field(key) => field(key),
        Key::Template(parts) => {
            let mut out = Vec::new();
            for part in parts {
                match part {
                    TemplatePart::Text(text) => out.extend_from_slice(text.as_bytes()),
                    TemplatePart::Field(key) => out.extend(field(key)?),
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(fields: &[(&str, &str)]) -> Fetched {
        Fetched::Found(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), SecretValue::from(&json!(v))))
                .collect(),
        )
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn get<'a>(rendered: &'a Rendered, name: &str) -> Option<&'a str> {
        rendered
            .env
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str())
    }

    fn store() -> HashMap<Read, Fetched> {
        HashMap::from([
            (
                Read::latest("secret/data/db"),
                secret(&[("user", "app"), ("password", "s3cret")]),
            ),
            (
                Read {
                    version: Some(1),
                    ..Read::latest("secret/data/db")
                },
                secret(&[("user", "app"), ("password", "old")]),
            ),
            (
                Read::latest("secret/data/extra"),
                secret(&[("TOKEN", "t0k"), ("PASSWORD", "from-path")]),
            ),
            (Read::latest("secret/data/gone"), Fetched::Missing),
            (
                Read {
                    write: Some(r#"{"common_name":"web"}"#.into()),
                    ..Read::latest("pki/issue/web")
                },
                secret(&[("certificate", "CERT"), ("private_key", "KEY")]),
            ),
        ])
    }

    #[test]
    fn values_versions_templates_and_interpolation() {
        let plan = plan(
            env(&[
                ("PASSWORD", "secrets-store:secret/data/db#password"),
                ("OLD", "secrets-store:secret/data/db#password#1"),
                (
                    "DSN",
                    "secrets-store:secret/data/db#postgres://${.user}:${.password}@db",
                ),
                ("GREETING", "hello ${secrets-store:secret/data/db#user}!"),
                ("PLAIN", "untouched"),
                ("SSI_INJECTOR_ROLE", "dropped"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(
            plan.reads,
            BTreeSet::from([
                Read::latest("secret/data/db"),
                Read {
                    version: Some(1),
                    ..Read::latest("secret/data/db")
                }
            ]),
            "each read once"
        );
        let rendered = render(plan, &store(), None, false).unwrap();
        assert_eq!(get(&rendered, "PASSWORD"), Some("s3cret"));
        assert_eq!(get(&rendered, "OLD"), Some("old"));
        assert_eq!(get(&rendered, "DSN"), Some("postgres://app:s3cret@db"));
        assert_eq!(get(&rendered, "GREETING"), Some("hello app!"));
        assert_eq!(get(&rendered, "PLAIN"), Some("untouched"));
        assert_eq!(
            get(&rendered, "SSI_INJECTOR_ROLE"),
            None,
            "configuration removed"
        );
    }

    #[test]
    fn env_from_path_imports_every_key_but_never_replaces_the_containers_own_references() {
        let plan = plan(
            env(&[("PASSWORD", "secrets-store:secret/data/db#password")]),
            &["secret/data/db".into(), "secret/data/extra".into()],
        )
        .unwrap();
        let rendered = render(plan, &store(), None, false).unwrap();
        assert_eq!(get(&rendered, "TOKEN"), Some("t0k"));
        assert_eq!(get(&rendered, "user"), Some("app"));
        assert_eq!(
            get(&rendered, "PASSWORD"),
            Some("s3cret"),
            "the container's own reference, not what another path holds"
        );
        assert_eq!(
            rendered.env.iter().filter(|(n, _)| n == "PASSWORD").count(),
            1
        );
    }

    #[test]
    fn env_from_path_neither_changes_what_runs_nor_replaces_the_containers_own_values() {
        let fetched = HashMap::from([(
            Read::env_from("secret/data/hostile"),
            secret(&[
                ("LD_PRELOAD", "/tmp/x.so"),
                ("NODE_OPTIONS", "--require /tmp/x"),
                ("BASH_FUNC_echo%%", "() { id; }"),
                ("https_proxy", "http://evil.example:3128"),
                ("SSI_INJECTOR_TLS_SKIP_VERIFY", "true"),
                ("EXTRA", "ok"),
            ]),
        )]);
        let planned = plan(env(&[]), &["secret/data/hostile".into()]).unwrap();
        let error = render(planned, &fetched, None, false).unwrap_err();
        for refused in [
            "LD_PRELOAD",
            "NODE_OPTIONS",
            "SSI_INJECTOR_TLS_SKIP_VERIFY",
            "BASH_FUNC_echo%%",
            "https_proxy",
        ] {
            assert!(
                error.contains(&format!("key \"{refused}\" is refused")),
                "{error}"
            );
        }
        assert!(!error.contains("/tmp/x"), "no value in {error}");

        let fetched = HashMap::from([(
            Read::env_from("secret/data/extra"),
            secret(&[("DB_HOST", "evil.example"), ("EXTRA", "ok")]),
        )]);
        let planned = plan(
            env(&[("DB_HOST", "db.internal")]),
            &["secret/data/extra".into()],
        )
        .unwrap();
        let rendered = render(planned, &fetched, None, false).unwrap();
        assert_eq!(
            get(&rendered, "DB_HOST"),
            Some("db.internal"),
            "the container's own value"
        );
        assert_eq!(get(&rendered, "EXTRA"), Some("ok"));
        assert!(
            rendered
                .notices
                .iter()
                .any(|n| n.contains("DB_HOST is set by the container itself"))
        );
    }

    #[test]
    fn a_missing_secret_fails_unless_ignored_and_never_leaks_values() {
        let vars = env(&[
            ("GONE", "secrets-store:secret/data/gone#x"),
            ("KEYLESS", "secrets-store:secret/data/db#nope"),
        ]);
        let error = render(plan(vars.clone(), &[]).unwrap(), &store(), None, false).unwrap_err();
        assert!(
            error.contains("env GONE: secret secret/data/gone does not exist"),
            "{error}"
        );
        assert!(
            error.contains("no key \"nope\" (keys: \"password\", \"user\")"),
            "{error}"
        );
        assert!(
            !error.contains("s3cret") && !error.contains("app,"),
            "{error}"
        );

        // ignore-missing tolerates the 404 only: the missing key still fails.
        let error = render(plan(vars, &[]).unwrap(), &store(), None, true).unwrap_err();
        assert!(
            !error.contains("GONE") && error.contains("KEYLESS"),
            "{error}"
        );
        let only_gone = env(&[("GONE", "secrets-store:secret/data/gone#x"), ("A", "b")]);
        let rendered = render(plan(only_gone, &[]).unwrap(), &store(), None, true).unwrap();
        assert_eq!(get(&rendered, "GONE"), None);
        assert_eq!(get(&rendered, "A"), Some("b"));
        assert_eq!(rendered.notices.len(), 1);
    }

    #[test]
    fn a_malformed_reference_names_the_variable() {
        let error = plan(env(&[("BROKEN", "secrets-store:secret/data/db")]), &[]).unwrap_err();
        assert!(error.starts_with("env BROKEN:"), "{error}");
    }

    #[test]
    fn one_write_answers_every_variable_that_names_it_and_login_fills_vault_token() {
        let body = r#"{"common_name": "web"}"#;
        let vars = env(&[
            (
                "CERT",
                &format!(">>secrets-store:pki/issue/web#certificate#{body}"),
            ),
            (
                "KEY",
                &format!(">>secrets-store:pki/issue/web#private_key#{body}"),
            ),
            ("VAULT_TOKEN", "secrets-store:login"),
        ]);
        let planned = plan(vars, &[]).unwrap();
        assert_eq!(
            planned.reads.len(),
            1,
            "the certificate and its key come from one answer"
        );
        assert!(planned.needs_token);
        let rendered = render(planned, &store(), Some("hvs.token"), false).unwrap();
        assert_eq!(get(&rendered, "CERT"), Some("CERT"));
        assert_eq!(get(&rendered, "KEY"), Some("KEY"));
        assert_eq!(get(&rendered, "VAULT_TOKEN"), Some("hvs.token"));

        // The token goes to VAULT_TOKEN only, as in Deckhouse.
        let error = plan(env(&[("TOKEN", "secrets-store:login")]), &[]).unwrap_err();
        assert!(
            error.contains("env TOKEN") && error.contains("VAULT_TOKEN only"),
            "{error}"
        );
    }

    #[test]
    fn env_from_path_entries_may_pin_a_version_as_in_deckhouse() {
        let planned = plan(env(&[]), &["secret/data/db#1".into()]).unwrap();
        assert_eq!(
            planned.reads,
            BTreeSet::from([Read {
                version: Some(1),
                ..Read::latest("secret/data/db")
            }])
        );
        let rendered = render(planned, &store(), None, false).unwrap();
        assert_eq!(get(&rendered, "password"), Some("old"));
    }
}
