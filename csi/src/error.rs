//! The driver's errors and the gRPC code each maps to. Messages name the SSI, file, path and key
//! involved, never a value.

use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    #[error("SecretsStoreImport {namespace}/{name} not found (it must be in the pod's namespace)")]
    SsiNotFound { namespace: String, name: String },

    #[error("SecretsStoreImport {namespace}/{name} is invalid")]
    InvalidSsi {
        namespace: String,
        name: String,
        #[source]
        source: ssi_core::InvalidSpec,
    },

    #[error("failed to read SecretsStoreImport {namespace}/{name} from the Kubernetes API")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: Arc<kube::Error>,
    },

    #[error("SecretsStoreImport {namespace}/{name} refused: {reason}")]
    Refused {
        namespace: String,
        name: String,
        reason: String,
    },

    #[error(
        "kubelet passed no ServiceAccount token for audience {audience:?}{}; list it in the CSIDriver's \
         spec.tokenRequests",
        if audience.is_empty() { " (the Kubernetes API's own)" } else { "" }
    )]
    MissingToken { audience: String },

    #[error("SecretsStoreImport {ssi}: failed to fetch {what}")]
    Store {
        ssi: String,
        what: String,
        #[source]
        source: Arc<ssi_vault::Error>,
    },

    #[error(
        "SecretsStoreImport {ssi}: file {file:?}: the value of {path}#{key} is not valid base64 (decodeBase64 is set)"
    )]
    Base64 {
        ssi: String,
        file: String,
        path: String,
        key: String,
    },

    #[error("failed to {action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("volume {volume_id} is already published at {} with other parameters", .target.display())]
    Conflict { volume_id: String, target: PathBuf },
}

impl Error {
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
            | Error::Base64 { .. } => Code::InvalidArgument,
            Error::SsiNotFound { .. } => Code::NotFound,
            Error::Kube { .. } => Code::Unavailable,
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
