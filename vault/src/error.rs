use std::fmt;

/// What the client was doing when it failed; part of every error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Login with the pod's token.
    Login {
        /// How the store checks the token.
        method: ssi_core::AuthMethod,
        /// Mount path of the auth method, below `auth/`.
        auth_path: String,
        /// The store role logged in as.
        role: String,
    },
    /// Read of a secret.
    Read {
        /// API path of the secret, below `/v1/`.
        path: String,
        /// KV v2 version asked for; `None` for the latest.
        version: Option<u64>,
    },
    /// A write that issues a secret (`>>secrets-store:`, e.g. a PKI certificate); the body is
    /// not shown.
    Write {
        /// API path below `/v1/`.
        path: String,
    },
    /// Renewal of the lease of the secret read from `path` (the lease id is not shown: with a
    /// token it is a handle on the credentials).
    RenewLease {
        /// API path the leased secret was read from.
        path: String,
    },
    /// Revocation of the lease of the secret read from `path`, when its volume goes.
    RevokeLease {
        /// API path the leased secret was read from.
        path: String,
    },
    /// Renewal of the session's own Vault token (`auth/token/renew-self`).
    RenewToken,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Login {
                method: ssi_core::AuthMethod::Kubernetes,
                auth_path,
                role,
            } => write!(f, "log in at auth/{auth_path} as role {role:?}"),
            Operation::Login {
                method,
                auth_path,
                role,
            } => write!(f, "log in by {method} at auth/{auth_path} as role {role:?}"),
            Operation::Read {
                path,
                version: None,
            } => write!(f, "read secret {path}"),
            Operation::Read {
                path,
                version: Some(v),
            } => {
                write!(f, "read secret {path} version {v}")
            }
            Operation::Write { path } => write!(f, "write to {path}"),
            Operation::RenewLease { path } => write!(f, "renew the lease of secret {path}"),
            Operation::RevokeLease { path } => write!(f, "revoke the lease of secret {path}"),
            Operation::RenewToken => write!(f, "renew the session's token"),
        }
    }
}

/// Errors of the store client. None of them ever carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The [`StoreConfig`](crate::StoreConfig) cannot be used: a bad address, namespace or CA
    /// bundle. Nothing was sent.
    #[error("invalid store configuration: {reason}")]
    Config {
        /// What is wrong with it.
        reason: String,
    },

    /// A secret or auth path that is not plain `/`-separated segments; refused before sending,
    /// so that a path cannot reach another API endpoint.
    #[error(
        "invalid store path {path:?}: use segments separated by '/', like secret/data/app, without '.', '..', '?', '#' or '%'"
    )]
    InvalidPath {
        /// The path as given.
        path: String,
    },

    /// No usable answer from the store: connection, TLS or timeout failure, or a reply cut short.
    #[error("failed to {operation}: the store at {address} is unreachable")]
    Unreachable {
        /// What was being done.
        operation: Operation,
        /// The store's address.
        address: String,
        /// The transport error (without the request's URL).
        #[source]
        source: reqwest::Error,
    },

    /// The store answered with a non-2xx status (after retries, for 5xx and 429).
    #[error("failed to {operation}: the store answered HTTP {status}{}", fmt_store_errors(.errors))]
    Api {
        /// What was being done.
        operation: Operation,
        /// The HTTP status.
        status: u16,
        /// The store's own `errors` texts, with any credential sent cut out.
        errors: Vec<String>,
    },

    /// A refused Kubernetes login: the store's reason, and the audiences of the token presented,
    /// since a role's `audience` that the token lacks is the most common cause and the store's
    /// own text rarely says so.
    #[error(
        "failed to {operation}: the store answered HTTP {status}{}; the pod's token was issued for \
         audience {}. If the audience is the cause: a role with `audience` set accepts only tokens \
         requested for that audience, and a store that reviews tokens with the pod's own token (no \
         token_reviewer_jwt, store outside the cluster) only tokens for the Kubernetes API's own \
         audience, our default; see docs/install.md, \"Token audience\"",
        fmt_store_errors(.errors),
        fmt_audiences(.token_audiences)
    )]
    LoginRefused {
        /// The login.
        operation: Operation,
        /// The HTTP status, 401 or 403.
        status: u16,
        /// The store's own `errors` texts, with the JWT cut out.
        errors: Vec<String>,
        /// The `aud` claim of the token presented; empty when it cannot be read.
        token_audiences: Vec<String>,
    },

    /// A read found no secret at the path (or not that version): HTTP 404.
    #[error(
        "failed to read secret {path}: nothing at this path (HTTP 404); check the path (KV version 2 paths contain /data/, e.g. secret/data/app) and the version"
    )]
    NotFound {
        /// The path read.
        path: String,
    },

    /// The reply is larger than [`StoreConfig::max_response_bytes`](crate::StoreConfig); not read
    /// further, and not retried.
    #[error(
        "failed to {operation}: the store's reply is larger than {limit} bytes; a secret this large \
         is not read (raise the limit if it is meant to be)"
    )]
    ResponseTooLarge {
        /// What was being done.
        operation: Operation,
        /// The limit, in bytes.
        limit: usize,
    },

    /// A 2xx reply the client cannot use: not JSON, a login without a token, a read without data
    /// (or of a deleted version).
    #[error("failed to {operation}: unexpected response from the store: {detail}")]
    InvalidResponse {
        /// What was being done.
        operation: Operation,
        /// What is wrong with the reply.
        detail: String,
    },

    /// A key asked for is not in the secret.
    #[error("secret {path} has no key {key:?} (it has: {})", keys_shown(.available))]
    MissingKey {
        /// The secret's path.
        path: String,
        /// The key asked for.
        key: String,
        /// The keys the secret has, to spot a typo.
        available: Vec<String>,
    },
}

/// At most this many keys are named in an error: a secret may have thousands.
pub const KEYS_SHOWN: usize = 20;

/// The keys an error names: at most [`KEYS_SHOWN`], each at most 64 characters, and how many
/// more there are.
fn keys_shown(keys: &[String]) -> String {
    let shown: Vec<String> = keys
        .iter()
        .take(KEYS_SHOWN)
        .map(|key| key.chars().take(64).collect())
        .collect();
    match keys.len().saturating_sub(KEYS_SHOWN) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

impl Error {
    /// The HTTP status the store answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::LoginRefused { status, .. } => Some(*status),
            Error::NotFound { .. } => Some(404),
            _ => None,
        }
    }

    /// The store refused the identity or the token (HTTP 403).
    pub fn is_permission_denied(&self) -> bool {
        self.status() == Some(403)
    }
}

fn fmt_audiences(audiences: &[String]) -> String {
    if audiences.is_empty() {
        "(none: the token has no readable audience, is it a ServiceAccount token?)".to_owned()
    } else {
        format!("{audiences:?}")
    }
}

/// Cuts `text` to at most `limit` bytes (on a character boundary), marking the cut with "...".
pub(crate) fn shorten(text: &mut String, limit: usize) {
    if text.len() > limit {
        let cut = (0..=limit)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
}

/// The store's own explanation, which is what a person needs to fix a refusal. Bounded so that a
/// misbehaving proxy cannot flood logs.
fn fmt_store_errors(errors: &[String]) -> String {
    const LIMIT: usize = 512;
    if errors.is_empty() {
        return String::new();
    }
    let mut text = errors.join("; ");
    shorten(&mut text, LIMIT);
    format!(": {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_login_names_the_tokens_audience() {
        let err = Error::LoginRefused {
            operation: Operation::Login {
                method: ssi_core::AuthMethod::Kubernetes,
                auth_path: "main-kube".into(),
                role: "r".into(),
            },
            status: 403,
            errors: vec!["invalid audience (aud) claim".into()],
            token_audiences: vec!["https://kubernetes.default.svc.cluster.local".into()],
        };
        let text = err.to_string();
        assert!(
            text.starts_with(
                "failed to log in at auth/main-kube as role \"r\": the store answered HTTP 403: \
                 invalid audience (aud) claim; the pod's token was issued for audience \
                 [\"https://kubernetes.default.svc.cluster.local\"]. If the audience is the cause: \
                 a role with `audience` set"
            ),
            "{text}"
        );
        assert!(err.is_permission_denied());
    }

    #[test]
    fn api_error_names_operation_status_and_store_text() {
        let err = Error::Api {
            operation: Operation::Login {
                method: ssi_core::AuthMethod::Kubernetes,
                auth_path: "main-kube".into(),
                role: "r".into(),
            },
            status: 403,
            errors: vec!["permission denied".into()],
        };
        assert_eq!(
            err.to_string(),
            "failed to log in at auth/main-kube as role \"r\": the store answered HTTP 403: permission denied"
        );
        assert!(err.is_permission_denied());
    }

    #[test]
    fn store_text_is_bounded() {
        let err = Error::Api {
            operation: Operation::Read {
                path: "p".into(),
                version: Some(2),
            },
            status: 500,
            errors: vec!["é".repeat(1000)],
        };
        let text = err.to_string();
        assert!(
            text.starts_with("failed to read secret p version 2: the store answered HTTP 500: ")
        );
        assert!(text.len() < 700, "{}", text.len());
        assert!(text.ends_with("..."));
    }

    #[test]
    fn missing_key_lists_available_keys() {
        let err = Error::MissingKey {
            path: "secret/data/app".into(),
            key: "pasword".into(),
            available: vec!["password".into(), "user".into()],
        };
        assert_eq!(
            err.to_string(),
            "secret secret/data/app has no key \"pasword\" (it has: password, user)"
        );
        let many = Error::MissingKey {
            path: "secret/data/app".into(),
            key: "k".into(),
            available: (0..5000)
                .map(|i| format!("{}{i}", "x".repeat(200)))
                .collect(),
        };
        let text = many.to_string();
        assert!(
            text.ends_with(" and 4980 more)"),
            "{}",
            &text[text.len() - 40..]
        );
        assert!(text.len() < 20 * 70 + 200, "{} bytes", text.len());
    }
}
