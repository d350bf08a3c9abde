//! The image's ENTRYPOINT and CMD, for containers that leave `command` to the image: the
//! injector must be told what to start.
//!
//! Design choices:
//! - Credentials are the pod's own: its `imagePullSecrets` and its ServiceAccount's, read from
//!   the pod's namespace (DESIGN.md 4.7). A missing pull secret is skipped, as kubelet does.
//! - One registry client per lookup: oci-client keeps the token it got per registry, and a client
//!   shared between pods would let one pod's credentials answer for another's.
//! - Answers are cached per image and credentials for a TTL; concurrent lookups of one key share
//!   one request. Failures are not cached, so the next review tries again.
//! - The whole lookup (Secrets, ServiceAccount, registry) has one deadline, below the
//!   apiserver's webhook timeout, so that a slow registry yields a denial that names it rather
//!   than a timed-out webhook.

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::ImageIndexEntry;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Image answers kept at most (each a few hundred bytes).
pub const REGISTRY_CACHE_ENTRIES: usize = 1024;

/// What an image starts when the container does not say: `ENTRYPOINT` and `CMD`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageCommand {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// Lookups by image reference, as the container wrote it.
pub type Entrypoints = HashMap<String, Result<ImageCommand, String>>;

/// The images a Pod needs looked up, and whose credentials to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    pub namespace: String,
    pub service_account: String,
    pub pull_secrets: Vec<String>,
    pub images: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub deadline: Duration,
    pub cache_ttl: Duration,
    /// Extra CA certificates (DER) trusted besides the system's; see [`ca_bundle`].
    pub ca_certificates: Vec<Vec<u8>>,
    /// Architecture chosen from a multi-arch index (the OS is always linux).
    pub architecture: String,
    /// Registries reached over plain HTTP (host:port); for local and test registries only.
    pub plain_http: Vec<String>,
}

/// Credentials for one registry, from a dockerconfigjson.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Credential {
    username: String,
    password: String,
}

type CacheKey = (String, u64);

struct CacheEntry {
    stored: Instant,
    answer: Arc<OnceCell<Result<ImageCommand, String>>>,
}

pub struct Registry {
    kube: kube::Client,
    settings: RegistrySettings,
    cache: Mutex<HashMap<CacheKey, CacheEntry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(kube: kube::Client, settings: RegistrySettings) -> Registry {
        Registry {
            kube,
            settings,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Looks up every image of `request` within the deadline; each answer or the reason why not.
    pub async fn entrypoints(&self, request: &LookupRequest) -> Entrypoints {
        let lookups = async {
            let credentials = self.credentials(request).await?;
            let mut answers = Entrypoints::new();
            let results = futures_util::future::join_all(
                request
                    .images
                    .iter()
                    .map(|image| self.cached_lookup(image, &credentials)),
            )
            .await;
            for (image, result) in request.images.iter().zip(results) {
                answers.insert(image.clone(), result);
            }
            Ok::<_, String>(answers)
        };
        let failed = |reason: String| {
            request
                .images
                .iter()
                .map(|image| (image.clone(), Err(reason.clone())))
                .collect()
        };
        match tokio::time::timeout(self.settings.deadline, lookups).await {
            Ok(Ok(answers)) => answers,
            Ok(Err(reason)) => failed(reason),
            Err(_) => failed(format!(
                "the registry lookup took longer than {:?}",
                self.settings.deadline
            )),
        }
    }

    /// The pod's pull credentials: its own imagePullSecrets, then its ServiceAccount's.
    async fn credentials(
        &self,
        request: &LookupRequest,
    ) -> Result<Vec<(String, Credential)>, String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.kube.clone(), &request.namespace);
        let mut names = request.pull_secrets.clone();
        match accounts.get_opt(&request.service_account).await {
            Ok(Some(account)) => names.extend(
                account
                    .image_pull_secrets
                    .unwrap_or_default()
                    .into_iter()
                    .map(|reference| reference.name),
            ),
            Ok(None) => {}
            Err(e) => {
                return Err(format!(
                    "cannot read ServiceAccount {}/{} for its imagePullSecrets: {e}",
                    request.namespace, request.service_account
                ));
            }
        }
        // NB: the apiserver's ServiceAccount admission has usually copied the account's pull
        // secrets into the pod already; read each once.
        let mut seen = std::collections::HashSet::new();
        names.retain(|name| seen.insert(name.clone()));
        let secrets: Api<Secret> = Api::namespaced(self.kube.clone(), &request.namespace);
        let mut credentials = Vec::new();
        for name in names {
            let secret = match secrets.get_opt(&name).await {
                Ok(Some(secret)) => secret,
                Ok(None) => continue,
                Err(e) => {
                    return Err(format!(
                        "cannot read imagePullSecret {}/{name}: {e}",
                        request.namespace
                    ));
                }
            };
            let data = secret.data.unwrap_or_default();
            if let Some(config) = data.get(".dockerconfigjson") {
                credentials.extend(docker_config_credentials(&config.0, true));
            } else if let Some(config) = data.get(".dockercfg") {
                credentials.extend(docker_config_credentials(&config.0, false));
            }
        }
        Ok(credentials)
    }

    async fn cached_lookup(
        &self,
        image: &str,
        credentials: &[(String, Credential)],
    ) -> Result<ImageCommand, String> {
        let reference: Reference = image
            .parse()
            .map_err(|e| format!("image {image:?} is not a valid reference: {e}"))?;
        let registry = reference.resolve_registry().to_owned();
        let candidates: Vec<Credential> = credentials
            .iter()
            .filter(|(host, _)| same_registry(host, &registry))
            .map(|(_, credential)| credential.clone())
            .collect();
        let mut hasher = DefaultHasher::new();
        candidates.hash(&mut hasher);
        let key = (image.to_owned(), hasher.finish());
        let answer = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|_, entry| entry.stored.elapsed() < self.settings.cache_ttl);
            // Pods name the images: anyone who may create one decides how many keys there are.
            // A full cache starts over (lookups in flight keep their own handle).
            if cache.len() >= REGISTRY_CACHE_ENTRIES && !cache.contains_key(&key) {
                cache.clear();
            }
            cache
                .entry(key.clone())
                .or_insert_with(|| CacheEntry {
                    stored: Instant::now(),
                    answer: Arc::default(),
                })
                .answer
                .clone()
        };
        let result = answer
            .get_or_init(|| {
                tracing::debug!(
                    image,
                    credentials = candidates.len(),
                    "asking the registry for the image's ENTRYPOINT"
                );
                self.lookup(&reference, image, &candidates)
            })
            .await
            .clone();
        if result.is_err() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache
                .get(&key)
                .is_some_and(|entry| Arc::ptr_eq(&entry.answer, &answer))
            {
                cache.remove(&key);
            }
        }
        result
    }

    /// Asks the registry, trying each matching credential, then anonymous access if none.
    async fn lookup(
        &self,
        reference: &Reference,
        image: &str,
        candidates: &[Credential],
    ) -> Result<ImageCommand, String> {
        let auths: Vec<RegistryAuth> = if candidates.is_empty() {
            vec![RegistryAuth::Anonymous]
        } else {
            candidates
                .iter()
                .map(|c| RegistryAuth::Basic(c.username.clone(), c.password.clone()))
                .collect()
        };
        let mut last_error = String::new();
        for auth in &auths {
            let client = self.client();
            match client.pull_manifest_and_config(reference, auth).await {
                Ok((_, _, config)) => {
                    return image_command(&config).map_err(|e| {
                        format!("image {image}: the image config cannot be read: {e}")
                    });
                }
                Err(e) => last_error = format!("image {image}: {e}"),
            }
        }
        Err(last_error)
    }

    fn client(&self) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let architecture = self.settings.architecture.clone();
        let resolver = move |entries: &[ImageIndexEntry]| {
            entries
                .iter()
                .find(|entry| {
                    entry.platform.as_ref().is_some_and(|platform| {
                        platform.os.to_string() == "linux"
                            && platform.architecture.to_string() == architecture
                    })
                })
                .map(|entry| entry.digest.clone())
        };
        Client::new(ClientConfig {
            protocol: if self.settings.plain_http.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(self.settings.plain_http.clone())
            },
            extra_root_certificates: self
                .settings
                .ca_certificates
                .iter()
                .map(|der| Certificate {
                    encoding: CertificateEncoding::Der,
                    data: der.clone(),
                })
                .collect(),
            platform_resolver: Some(Box::new(resolver)),
            connect_timeout: Some(self.settings.deadline),
            read_timeout: Some(self.settings.deadline),
            ..ClientConfig::default()
        })
    }
}

/// Every certificate of a PEM bundle (one file may trust several registries' CAs).
pub fn ca_bundle(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certificates = CertificateDer::pem_slice_iter(pem)
        .map(|certificate| certificate.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certificates.is_empty() {
        return Err("no CERTIFICATE block in it".to_owned());
    }
    Ok(certificates)
}

/// Host (and port) of each entry of a docker config: `{"auths": {host: {...}}}` for
/// `.dockerconfigjson`, `{host: {...}}` for the legacy `.dockercfg`. Entries carry `username`
/// and `password`, or `auth` (base64 of `user:password`).
fn docker_config_credentials(bytes: &[u8], wrapped: bool) -> Vec<(String, Credential)> {
    use base64::Engine;
    let Ok(config) = serde_json::from_slice::<Value>(bytes) else {
        return Vec::new();
    };
    let auths = if wrapped { &config["auths"] } else { &config };
    let Some(auths) = auths.as_object() else {
        return Vec::new();
    };
    let mut sorted: BTreeMap<&String, &Value> = BTreeMap::new();
    sorted.extend(auths.iter());
    sorted
        .into_iter()
        .filter_map(|(host, entry)| {
            let text = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or_default();
            let (username, password) = if !text("username").is_empty() {
                (text("username").to_owned(), text("password").to_owned())
            } else {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(text("auth"))
                    .ok()?;
                let decoded = String::from_utf8(decoded).ok()?;
                let (user, password) = decoded.split_once(':')?;
                (user.to_owned(), password.to_owned())
            };
            Some((registry_host(host), Credential { username, password }))
        })
        .collect()
}

/// `https://index.docker.io/v1/` → `index.docker.io`: a docker config key as a host[:port].
fn registry_host(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    without_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Whether a docker config host names `registry`; Docker Hub goes by several names.
fn same_registry(host: &str, registry: &str) -> bool {
    const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    host == registry || (DOCKER_HUB.contains(&host) && DOCKER_HUB.contains(&registry))
}

/// ENTRYPOINT and CMD from an image config (`{"config": {"Entrypoint": [..], "Cmd": [..]}}`).
fn image_command(config: &str) -> Result<ImageCommand, String> {
    let config: Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
    let list = |key: &str| -> Vec<String> {
        config["config"][key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(ImageCommand {
        entrypoint: list("Entrypoint"),
        cmd: list("Cmd"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn docker_configs_in_both_formats() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let json = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}}, "127.0.0.1:5000": {{"username": "alice", "password": "pw"}}}}}}"#
        );
        let credentials = docker_config_credentials(json.as_bytes(), true);
        let hosts: Vec<&str> = credentials.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(hosts, ["127.0.0.1:5000", "index.docker.io"]);
        assert_eq!(credentials[0].1.username, "alice");
        assert_eq!(credentials[1].1.password, "s3cret");
        let legacy = format!(r#"{{"registry.example.com": {{"auth": "{auth}"}}}}"#);
        let credentials = docker_config_credentials(legacy.as_bytes(), false);
        assert_eq!(credentials[0].0, "registry.example.com");
        assert!(docker_config_credentials(b"not json", true).is_empty());
    }

    #[test]
    fn ca_bundles_hold_every_certificate() {
        let one = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            ca_bundle(format!("{one}{one}").as_bytes()).unwrap().len(),
            2
        );
        assert!(
            ca_bundle(b"no pem here")
                .unwrap_err()
                .contains("no CERTIFICATE")
        );
    }

    #[test]
    fn docker_hub_has_several_names() {
        assert!(same_registry("docker.io", "index.docker.io"));
        assert!(same_registry("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(!same_registry("127.0.0.1:5000", "127.0.0.1:5001"));
        assert!(!same_registry("docker.io", "ghcr.io"));
    }

    #[test]
    fn image_config_commands() {
        let command = image_command(
            r#"{"architecture": "amd64", "config": {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"]}}"#,
        )
        .unwrap();
        assert_eq!(command.entrypoint, ["/bin/app"]);
        assert_eq!(command.cmd, ["--serve"]);
        assert_eq!(
            image_command(r#"{"config": {}}"#).unwrap(),
            ImageCommand::default()
        );
        assert!(image_command("[").is_err());
    }
}
