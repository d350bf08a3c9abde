//! The driver's errors and the gRPC code each maps to. Messages name the SSI, file, path and key
//! involved, never a value.

use std::path::PathBuf;
use std::sync::Arc;

/// Why a publish, an unpublish or a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kubelet's request is malformed or not allowed (e.g. not read-only, a target outside
    /// kubelet's root): InvalidArgument.
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// No SecretsStoreImport of that name in the pod's namespace: NotFound.
    #[error("SecretsStoreImport {namespace}/{name} not found (it must be in the pod's namespace)")]
    SsiNotFound {
        /// The pod's namespace.
        namespace: String,
        /// The SecretsStoreImport's name.
        name: String,
    },

    /// The SecretsStoreImport fails the driver's own checks (the API may not have validated
    /// it): InvalidArgument.
    #[error("SecretsStoreImport {namespace}/{name} is invalid")]
    InvalidSsi {
        /// The pod's namespace.
        namespace: String,
        /// The SecretsStoreImport's name.
        name: String,
        /// What is wrong with its spec.
        #[source]
        source: ssi_core::InvalidSpec,
    },

    /// Reading the SecretsStoreImport from the Kubernetes API failed: Unavailable.
    #[error("failed to read SecretsStoreImport {namespace}/{name} from the Kubernetes API")]
    Kube {
        /// The pod's namespace.
        namespace: String,
        /// The SecretsStoreImport's name.
        name: String,
        /// The client's error; shared, as one read may serve several volumes.
        #[source]
        source: Arc<kube::Error>,
    },

    /// The SecretsStoreImport asks for what the operator does not allow (a store address not
    /// listed, skipTLSVerify), or names no store and there is no default: PermissionDenied.
    #[error("SecretsStoreImport {namespace}/{name} refused: {reason}")]
    Refused {
        /// The pod's namespace.
        namespace: String,
        /// The SecretsStoreImport's name.
        name: String,
        /// What was refused and how to fix it.
        reason: String,
    },

    /// Kubelet passed no pod token for the audience the SecretsStoreImport (or the driver's
    /// default) asks for; the CSIDriver must request it: InvalidArgument.
    #[error(
        "kubelet passed no ServiceAccount token for audience {audience:?}{}; list it in the CSIDriver's \
         spec.tokenRequests",
        if audience.is_empty() { " (the Kubernetes API's own)" } else { "" }
    )]
    MissingToken {
        /// The audience looked for; empty means the Kubernetes API's own.
        audience: String,
    },

    /// The store failed a login, a read or the connection setup, or a secret lacks the key.
    /// The code follows the cause: NotFound for a missing path or key, PermissionDenied for
    /// HTTP 403, InvalidArgument for 400, Unavailable when unreachable or for 429 and 5xx,
    /// Internal otherwise.
    #[error("SecretsStoreImport {ssi}: failed to fetch {what}")]
    Store {
        /// The SecretsStoreImport, as `namespace/name`.
        ssi: String,
        /// What was being fetched: a secret's path, a file, or a connection to the store.
        what: String,
        /// The store client's error; shared, as one read may serve several volumes.
        #[source]
        source: Arc<ssi_vault::Error>,
    },

    /// A file has decodeBase64 set and its value is not valid base64: InvalidArgument.
    #[error(
        "SecretsStoreImport {ssi}: file {file:?}: the value of {path}#{key} is not valid base64 (decodeBase64 is set)"
    )]
    Base64 {
        /// The SecretsStoreImport, as `namespace/name`.
        ssi: String,
        /// The file's name.
        file: String,
        /// The store path the value came from.
        path: String,
        /// The key of the value in that secret.
        key: String,
    },

    /// A file's template cannot be rendered from what was read (a field it uses is missing, its
    /// syntax is wrong): InvalidArgument. Names the file and the field, never a value.
    #[error("SecretsStoreImport {ssi}: file {file:?}: {problem}")]
    Template {
        /// The SecretsStoreImport, as `namespace/name`.
        ssi: String,
        /// The file's name.
        file: String,
        /// What is wrong, in words of ours.
        problem: String,
    },

    /// A volume's secrets and files need more memory at once than a volume may hold (twice its
    /// tmpfs): InvalidArgument. Nothing is written; the old files stay.
    #[error(
        "SecretsStoreImport {ssi}: its secrets and files need more than {} KiB at once, the most a \
         volume may hold (twice the volume's tmpfs size, csi.tmpfsSize); import fewer or smaller \
         secrets, or raise csi.tmpfsSize and the driver's memory limit (docs/install.md)",
        limit / 1024
    )]
    TooLarge {
        /// The SecretsStoreImport, as `namespace/name`.
        ssi: String,
        /// The most a volume may hold, in bytes.
        limit: usize,
    },

    /// A rotation's reads took longer than the volume's deadline (a slow or unreachable store
    /// or API): Unavailable. The old files are kept.
    #[error(
        "SecretsStoreImport {ssi}: no answer from the store or the Kubernetes API within {after:?}"
    )]
    Deadline {
        /// The SecretsStoreImport, as `namespace/name`.
        ssi: String,
        /// The deadline.
        after: std::time::Duration,
    },

    /// Work on the node failed: a mount, a directory, the files, a mount record, or a volume's
    /// I/O that timed out or whose tmpfs is gone: Internal.
    #[error("failed to {action} {}", .path.display())]
    Io {
        /// What the driver was doing, worded to read `failed to <action> <path>`.
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },

    /// The volume is already published with another target path, SecretsStoreImport or pod:
    /// AlreadyExists.
    #[error("volume {volume_id} is already published at {} with other parameters", .target.display())]
    Conflict {
        /// Kubelet's volume id.
        volume_id: String,
        /// The target path of the refused request.
        target: PathBuf,
    },
}

impl Error {
    /// Turns an I/O error into [`Error::Io`], for `map_err`:
    /// `.map_err(Error::io("unmount", &target))`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// The gRPC code kubelet sees.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::InvalidRequest(_)
            | Error::InvalidSsi { .. }
            | Error::MissingToken { .. }
            | Error::Base64 { .. }
            | Error::Template { .. }
            | Error::TooLarge { .. } => Code::InvalidArgument,
            Error::SsiNotFound { .. } => Code::NotFound,
            Error::Kube { .. } | Error::Deadline { .. } => Code::Unavailable,
            Error::Refused { .. } => Code::PermissionDenied,
            Error::Store { source, .. } => match source.as_ref() {
                ssi_vault::Error::NotFound { .. } | ssi_vault::Error::MissingKey { .. } => {
                    Code::NotFound
                }
                ssi_vault::Error::Unreachable { .. } => Code::Unavailable,
                e => match e.status() {
                    Some(403) => Code::PermissionDenied,
                    Some(400) => Code::InvalidArgument,
                    Some(429) | Some(500..=599) => Code::Unavailable,
                    _ => Code::Internal,
                },
            },
            Error::Io { .. } => Code::Internal,
            Error::Conflict { .. } => Code::AlreadyExists,
        }
    }

    /// A short, bounded label for metrics.
    pub fn code_label(&self) -> &'static str {
        match self.code() {
            tonic::Code::InvalidArgument => "invalid_argument",
            tonic::Code::NotFound => "not_found",
            tonic::Code::Unavailable => "unavailable",
            tonic::Code::PermissionDenied => "permission_denied",
            tonic::Code::AlreadyExists => "already_exists",
            _ => "internal",
        }
    }
}

/// The message with its whole cause chain, as kubelet shows it in the pod's events.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> tonic::Status {
        tonic::Status::new(error.code(), chain(&error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_error(source: ssi_vault::Error) -> Error {
        Error::Store {
            ssi: "ns/app".into(),
            what: "secret/data/x".into(),
            source: Arc::new(source),
        }
    }

    #[test]
    fn store_errors_map_to_codes_by_cause() {
        let denied = store_error(ssi_vault::Error::Api {
            operation: ssi_vault::Operation::Login {
                method: ssi_vault::AuthMethod::Kubernetes,
                auth_path: "kubernetes".into(),
                role: "r".into(),
            },
            status: 403,
            errors: vec!["permission denied".into()],
        });
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let status = tonic::Status::from(denied);
        assert_eq!(
            status.message(),
            "SecretsStoreImport ns/app: failed to fetch secret/data/x: failed to log in at auth/kubernetes as role \"r\": \
             the store answered HTTP 403: permission denied"
        );
        let missing = store_error(ssi_vault::Error::NotFound {
            path: "secret/data/x".into(),
        });
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let sealed = store_error(ssi_vault::Error::Api {
            operation: ssi_vault::Operation::Read {
                path: "p".into(),
                version: None,
            },
            status: 503,
            errors: vec![],
        });
        assert_eq!(sealed.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn request_and_lookup_errors_map_to_their_codes() {
        assert_eq!(
            Error::InvalidRequest("x".into()).code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            Error::SsiNotFound {
                namespace: "a".into(),
                name: "b".into()
            }
            .code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            Error::Refused {
                namespace: "a".into(),
                name: "b".into(),
                reason: "r".into()
            }
            .code(),
            tonic::Code::PermissionDenied
        );
    }
}
