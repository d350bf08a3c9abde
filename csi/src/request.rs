//! NodePublishVolume requests as kubelet sends them, checked and turned into a mount record.

use crate::error::Error;
use crate::fetch::Tokens;
use crate::mount::confine;
use crate::proto::{NodePublishVolumeRequest, volume_capability};
use crate::state::{PodInfo, Record};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Volume context key of the pod's name (kubelet sets it with `podInfoOnMount: true`).
pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
/// Volume context key of the pod's namespace.
pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
/// Volume context key of the pod's UID.
pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
/// Volume context key of the pod's ServiceAccount name.
pub const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
/// Key of the pod's ServiceAccount tokens by audience (the CSIDriver's `tokenRequests`), in the
/// volume context or in `secrets`.
pub const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// A NodePublishVolume request, checked.
#[derive(Debug)]
pub struct PublishRequest {
    /// The volume, its target and its pod, as saved in the state dir.
    pub record: Record,
    /// The pod's tokens, kept in memory only: never in the record.
    pub tokens: Tokens,
}

#[derive(Deserialize)]
struct TokenEntry {
    token: String,
}

/// Parses kubelet's `serviceAccount.tokens` JSON (`{"<audience>":{"token":"...",...}}`).
pub fn parse_tokens(json: &str) -> Result<Tokens, Error> {
    let entries: HashMap<String, TokenEntry> = serde_json::from_str(json).map_err(|_| {
        // The text may hold tokens: never echo it.
        Error::InvalidRequest(format!(
            "{TOKENS} is not a JSON map of audience to {{\"token\": ...}}"
        ))
    })?;
    Ok(entries
        .into_iter()
        .map(|(audience, entry)| (audience, SecretString::from(entry.token)))
        .collect())
}

/// Refuses a token whose own claims name another ServiceAccount or pod than the request does:
/// sessions are cached by the pod's identity, so the two must agree. The claims are compared,
/// not trusted: the store verifies the token.
fn check_token_identity(pod: &PodInfo, jwt: &str) -> Result<(), Error> {
    let identity = ssi_vault::token_identity(jwt).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "{TOKENS} holds a token that is not a Kubernetes ServiceAccount token"
        ))
    })?;
    let same_account =
        identity.namespace == pod.namespace && identity.service_account == pod.service_account;
    let same_pod = identity.pod_uid.as_ref().is_none_or(|uid| *uid == pod.uid);
    if same_account && same_pod {
        return Ok(());
    }
    Err(Error::InvalidRequest(format!(
        "the ServiceAccount token is for {}/{}{}, but the request is for pod {}/{} (uid {}) \
         of ServiceAccount {}",
        identity.namespace,
        identity.service_account,
        identity
            .pod_uid
            .as_ref()
            .map(|uid| format!(" bound to pod uid {uid}"))
            .unwrap_or_default(),
        pod.namespace,
        pod.name,
        pod.uid,
        pod.service_account
    )))
}

/// Checks kubelet's NodePublishVolume request: a read-only mount volume with its target below
/// `kubelet_root`, the pod's info, a SecretsStoreImport name, and tokens of that very pod.
/// Any failure is an [`Error::InvalidRequest`].
pub fn parse(
    request: &NodePublishVolumeRequest,
    kubelet_root: &Path,
) -> Result<PublishRequest, Error> {
    let invalid = |text: String| Error::InvalidRequest(text);
    if request.volume_id.is_empty() {
        return Err(invalid("volume_id is empty".into()));
    }
    if request.target_path.is_empty() {
        return Err(invalid("target_path is empty".into()));
    }
    let target_path =
        confine(&PathBuf::from(&request.target_path), kubelet_root).map_err(invalid)?;
    // A writable volume would let the pod plant what the root driver later reads and deletes
    // (and its writes would be lost at the next rotation anyway), as the upstream secrets-store
    // CSI driver also refuses.
    if !request.readonly {
        return Err(invalid(
            "the volume must be read-only: set readOnly: true on the pod's csi volume (the webhook \
             does this in every namespace it serves)"
                .into(),
        ));
    }

    let capability = request
        .volume_capability
        .as_ref()
        .ok_or_else(|| invalid("volume_capability is missing".into()))?;
    let mount = match &capability.access_type {
        Some(volume_capability::AccessType::Mount(mount)) => mount,
        _ => {
            return Err(invalid(
                "only filesystem (mount) volumes are supported, not block volumes".into(),
            ));
        }
    };
    let mount_group = match mount.volume_mount_group.as_str() {
        "" => None,
        gid => Some(
            gid.parse::<u32>()
                .map_err(|_| invalid(format!("volume_mount_group {gid:?} is not a group id")))?,
        ),
    };

    let context = &request.volume_context;
    let get = |key: &str| -> Result<String, Error> {
        context.get(key).filter(|v| !v.is_empty()).cloned().ok_or_else(|| {
            invalid(format!(
                "volume attribute {key} is missing; the CSIDriver object must set podInfoOnMount: true \
                 (and the pod's volume must set volumeAttributes.{})",
                ssi_core::ATTR_SECRETS_STORE_IMPORT
            ))
        })
    };
    let ssi = context
        .get(ssi_core::ATTR_SECRETS_STORE_IMPORT)
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or_else(|| {
            invalid(format!(
                "volumeAttributes.{} is missing: name the SecretsStoreImport to mount",
                ssi_core::ATTR_SECRETS_STORE_IMPORT
            ))
        })?;
    if !ssi_core::is_object_name(&ssi) {
        // NB: the name comes from the pod spec and goes into an API URL; echo a bounded part.
        return Err(invalid(format!(
            "volumeAttributes.{} {:?} is not a SecretsStoreImport name (lowercase letters, digits, \
             '-' and '.', at most 253 characters)",
            ssi_core::ATTR_SECRETS_STORE_IMPORT,
            ssi.chars().take(64).collect::<String>()
        )));
    }
    let pod = PodInfo {
        namespace: get(POD_NAMESPACE)?,
        name: get(POD_NAME)?,
        uid: get(POD_UID)?,
        service_account: get(SERVICE_ACCOUNT)?,
    };
    // NB: kubelet puts the tokens in volume_context; some versions (and the CSI sanity tools)
    // pass them in `secrets` instead.
    let tokens_json = context.get(TOKENS).or_else(|| request.secrets.get(TOKENS)).ok_or_else(|| {
        invalid(format!(
            "{TOKENS} is missing: the CSIDriver object must request a token (spec.tokenRequests)"
        ))
    })?;
    let tokens = parse_tokens(tokens_json)?;
    for token in tokens.values() {
        check_token_identity(&pod, token.expose_secret())?;
    }

    Ok(PublishRequest {
        record: Record {
            volume_id: request.volume_id.clone(),
            target_path,
            pod,
            ssi,
            mount_group,
            held: Vec::new(),
            held_by: None,
        },
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{VolumeCapability, volume_capability::MountVolume};

    /// A token shaped as kubelet's: claims of `namespace`/`account`, bound to pod `uid`.
    fn token(namespace: &str, account: &str, uid: &str) -> String {
        use base64::Engine;
        let encode = |text: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        format!(
            "{}.{}.c2lnbmF0dXJl",
            encode(r#"{"alg":"RS256"}"#.to_owned()),
            encode(format!(
                r#"{{"aud":["https://kubernetes.default.svc"],"kubernetes.io":{{"namespace":"{namespace}",
                   "pod":{{"name":"backend-1","uid":"{uid}"}},"serviceaccount":{{"name":"{account}"}}}}}}"#
            ))
        )
    }

    fn tokens(jwt: &str) -> String {
        format!(r#"{{"vault":{{"token":"{jwt}","expirationTimestamp":"2026-11-28T04:00:00Z"}}}}"#)
    }

    fn request(root: &Path) -> NodePublishVolumeRequest {
        let context: HashMap<String, String> = [
            ("secretsStoreImport", "python-backend"),
            (POD_NAME, "backend-1"),
            (POD_NAMESPACE, "my-namespace1"),
            (POD_UID, "uid-1"),
            (SERVICE_ACCOUNT, "backend-sa"),
            (
                TOKENS,
                &tokens(&token("my-namespace1", "backend-sa", "uid-1")),
            ),
            ("csi.storage.k8s.io/ephemeral", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        NodePublishVolumeRequest {
            volume_id: "csi-abc".into(),
            target_path: root
                .join("pods/uid-1/volumes/kubernetes.io~csi/secrets/mount")
                .display()
                .to_string(),
            volume_capability: Some(VolumeCapability {
                access_type: Some(volume_capability::AccessType::Mount(MountVolume::default())),
                access_mode: None,
            }),
            readonly: true,
            volume_context: context,
            ..Default::default()
        }
    }

    #[test]
    fn an_ssi_name_that_is_no_object_name_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        for name in [
            "../../secrets/x",
            "a?watch=true",
            "Python",
            &"x".repeat(300),
        ] {
            let mut request = request(root);
            request
                .volume_context
                .insert(ssi_core::ATTR_SECRETS_STORE_IMPORT.into(), name.to_owned());
            let error = parse(&request, root).expect_err(name).to_string();
            assert!(
                error.contains("is not a SecretsStoreImport name"),
                "{error}"
            );
            assert!(error.len() < 300, "the name is echoed bounded: {error}");
        }
    }

    #[test]
    fn a_writable_volume_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let mut writable = request(root);
        writable.readonly = false;
        let error = parse(&writable, root).expect_err("refused").to_string();
        assert!(
            error.contains("must be read-only") && error.contains("readOnly: true"),
            "{error}"
        );
    }

    #[test]
    fn parses_what_kubelet_sends() {
        let root = tempfile::tempdir().unwrap();
        let parsed = parse(&request(root.path()), root.path()).unwrap();
        assert_eq!(parsed.record.ssi, "python-backend");
        assert_eq!(parsed.record.pod.service_account, "backend-sa");
        assert_eq!(parsed.record.mount_group, None);
        assert!(parsed.tokens.contains_key("vault"));
        assert!(
            !format!("{parsed:?}").contains("c2lnbmF0dXJl"),
            "tokens never print"
        );
    }

    #[test]
    fn a_token_of_another_identity_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        for (jwt, names) in [
            (
                token("my-namespace1", "other-sa", "uid-1"),
                "my-namespace1/other-sa",
            ),
            (
                token("other-ns", "backend-sa", "uid-1"),
                "other-ns/backend-sa",
            ),
            (
                token("my-namespace1", "backend-sa", "uid-2"),
                "bound to pod uid uid-2",
            ),
            (
                "eyJ.not.claims".to_owned(),
                "not a Kubernetes ServiceAccount token",
            ),
        ] {
            let mut request = request(root);
            request.volume_context.insert(TOKENS.into(), tokens(&jwt));
            let error = parse(&request, root).expect_err(names).to_string();
            assert!(error.contains(names), "{error}");
            assert!(!error.contains("c2lnbmF0dXJl"), "no token in {error}");
        }
    }

    #[test]
    fn accepts_tokens_from_secrets_and_reads_the_mount_group() {
        let root = tempfile::tempdir().unwrap();
        let mut req = request(root.path());
        let tokens = req.volume_context.remove(TOKENS).unwrap();
        req.secrets.insert(TOKENS.into(), tokens);
        if let Some(volume_capability::AccessType::Mount(m)) = req
            .volume_capability
            .as_mut()
            .and_then(|c| c.access_type.as_mut())
        {
            m.volume_mount_group = "2000".into();
        }
        let parsed = parse(&req, root.path()).unwrap();
        assert_eq!(parsed.record.mount_group, Some(2000));
        assert!(parsed.tokens.contains_key("vault"));
    }

    #[test]
    fn rejects_incomplete_or_misplaced_requests_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let check = |mutate: &dyn Fn(&mut NodePublishVolumeRequest), expected: &str| {
            let mut req = request(root.path());
            mutate(&mut req);
            let err = parse(&req, root.path()).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.to_string().contains(expected), "{err}");
            assert!(!err.to_string().contains("eyJ"), "{err}");
        };
        check(&|r| r.volume_id.clear(), "volume_id");
        check(
            &|r| r.target_path = "/etc/cron.d".into(),
            "outside the kubelet root",
        );
        check(
            &|r| {
                r.volume_context.remove("secretsStoreImport");
            },
            "volumeAttributes.secretsStoreImport",
        );
        check(
            &|r| {
                r.volume_context.remove(POD_UID);
            },
            "podInfoOnMount",
        );
        check(
            &|r| {
                r.volume_context.remove(TOKENS);
            },
            "tokenRequests",
        );
        check(
            &|r| {
                r.volume_context
                    .insert(TOKENS.into(), "eyJ-not-json".into());
            },
            "JSON map",
        );
        check(&|r| r.volume_capability = None, "volume_capability");
        check(
            &|r| {
                r.volume_capability = Some(VolumeCapability {
                    access_type: Some(volume_capability::AccessType::Block(Default::default())),
                    access_mode: None,
                })
            },
            "block",
        );
    }
}
