//! The image's ENTRYPOINT and CMD, for containers that leave `command` to the image: the
//! injector must be told what to start.
//!
//! Design choices:
//! - Credentials are the pod's own: its `imagePullSecrets` and its ServiceAccount's, read from
//!   the pod's namespace (DESIGN.md 4.7). A missing pull secret is skipped, as kubelet does.
//! - One HTTP client for all lookups, holding no credentials: each lookup keeps the token it
//!   earned to itself (see [`crate::oci`]), so one pod's credentials never answer for another's.
//! - Answers are cached per image and credentials for a TTL; concurrent lookups of one key share
//!   one request. Failures are not cached, so the next review tries again.
//! - The whole lookup (Secrets, ServiceAccount, registry) has one deadline, below the
//!   apiserver's webhook timeout, so that a slow registry yields a denial that names it rather
//!   than a timed-out webhook.

use crate::oci::{Credential, Destinations, Failure, Fetcher};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use oci_spec::distribution::Reference;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, Semaphore};

/// Image answers kept at most (each a few hundred bytes).
pub const REGISTRY_CACHE_ENTRIES: usize = 1024;

/// Registry conversations at once, for the whole webhook: each may hold a body of up to
/// [`crate::oci::BODY_LIMIT`], so this bounds their memory whatever the pods name.
pub const CONCURRENT_LOOKUPS: usize = 12;

/// Conversations with one registry at once: a slow registry (one tenant's, say) holds at most
/// these of the [`CONCURRENT_LOOKUPS`], and lookups at other registries go on.
pub const LOOKUPS_PER_REGISTRY: usize = 4;

/// Reviews of one namespace that look up images at once: a tenant who reaches a slow registry
/// under many names still holds at most these reviews' lookups.
pub const LOOKUPS_PER_NAMESPACE: usize = 4;

/// Registries (or namespaces) whose lookups are counted at once; idle ones are forgotten
/// beyond it.
const SLOTS_COUNTED: usize = 256;

/// Pull secrets read at once, for the whole webhook: each is up to the apiserver's 1.5 MiB
/// object limit as a body, and its docker config decoded.
pub const CONCURRENT_SECRET_READS: usize = 1;

/// Pull secrets read per review (the pod's, then its ServiceAccount's): a pod may name many.
pub const PULL_SECRETS_PER_REVIEW: usize = 8;

/// Registries taken from one docker config: the rest of a larger one is skipped unread.
pub const REGISTRIES_PER_DOCKER_CONFIG: usize = 64;

/// The slots of `key` in `map` (`permits` of them), made when first asked for.
fn slots_of(
    map: &Mutex<HashMap<String, Arc<Semaphore>>>,
    key: &str,
    permits: usize,
) -> Arc<Semaphore> {
    let mut slots = map.lock().unwrap_or_else(|p| p.into_inner());
    if slots.len() >= SLOTS_COUNTED && !slots.contains_key(key) {
        // Only those nobody is using now are forgotten.
        slots.retain(|_, kept| Arc::strong_count(kept) > 1);
    }
    slots
        .entry(key.to_owned())
        .or_insert_with(|| Arc::new(Semaphore::new(permits)))
        .clone()
}

/// What an image starts when the container does not say: `ENTRYPOINT` and `CMD`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageCommand {
    /// The image's `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// The image's `CMD`: default arguments.
    pub cmd: Vec<String>,
}

/// Lookups by image reference, as the container wrote it.
pub type Entrypoints = HashMap<String, Result<ImageCommand, String>>;

/// The images a Pod needs looked up, and whose credentials to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    /// The pod's namespace: the only one whose Secrets are read.
    pub namespace: String,
    /// The pod's ServiceAccount, whose pull secrets are used too.
    pub service_account: String,
    /// The pod's `imagePullSecrets`, by name.
    pub pull_secrets: Vec<String>,
    /// Image references, as the containers wrote them.
    pub images: Vec<String>,
}

/// How the ENTRYPOINT/CMD lookup behaves, from the webhook's flags.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Bound on one Pod's lookups, credentials included; below the webhook's timeout.
    pub deadline: Duration,
    /// How long an answer is reused, per image and credentials.
    pub cache_ttl: Duration,
    /// Extra CA certificates (DER) trusted besides the system's; see [`ca_bundle`].
    pub ca_certificates: Vec<Vec<u8>>,
    /// Architecture chosen from a multi-arch index (the OS is always linux).
    pub architecture: String,
    /// Registries reached over plain HTTP (host:port); for local and test registries only.
    pub plain_http: Vec<String>,
    /// When not empty, the only registries (host or host:port) looked up; these skip the
    /// address check, the operator vouches for them.
    pub allowed_hosts: Vec<String>,
    /// Look up registries whose name resolves to a private address (an in-cluster registry).
    pub allow_private: bool,
}

type CacheKey = (String, u64);

struct CacheEntry {
    stored: Instant,
    answer: Arc<OnceCell<Result<ImageCommand, String>>>,
}

/// The ENTRYPOINT/CMD lookup: credentials from the pod's namespace, a bounded number of
/// registry conversations at once, answers cached per image and credentials.
pub struct Registry {
    kube: kube::Client,
    settings: RegistrySettings,
    fetcher: Fetcher,
    lookup_slots: Semaphore,
    /// [`LOOKUPS_PER_REGISTRY`] slots for each registry being asked.
    registry_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// [`LOOKUPS_PER_NAMESPACE`] slots for each namespace whose reviews look up images.
    namespace_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    secret_reads: Semaphore,
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
    /// A lookup service with one shared HTTP client; an error if a CA certificate is unusable.
    pub fn new(kube: kube::Client, settings: RegistrySettings) -> Result<Registry, String> {
        let fetcher = Fetcher::new(
            Destinations {
                trusted_hosts: settings.allowed_hosts.clone(),
                allow_private: settings.allow_private,
                plain_http: settings.plain_http.clone(),
            },
            &settings.ca_certificates,
            settings.architecture.clone(),
            settings.deadline,
        )?;
        Ok(Registry {
            kube,
            settings,
            fetcher,
            lookup_slots: Semaphore::new(CONCURRENT_LOOKUPS),
            registry_slots: Mutex::new(HashMap::new()),
            namespace_slots: Mutex::new(HashMap::new()),
            secret_reads: Semaphore::new(CONCURRENT_SECRET_READS),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Looks up every image of `request` within the lookup deadline, and before `review_deadline`
    /// (the whole review's); each answer or the reason why not.
    pub async fn entrypoints(
        &self,
        request: &LookupRequest,
        review_deadline: tokio::time::Instant,
    ) -> Entrypoints {
        let lookups = async {
            // NB: always the namespace's slot first, then a registry's, then a shared one.
            let namespace_slots = slots_of(
                &self.namespace_slots,
                &request.namespace,
                LOOKUPS_PER_NAMESPACE,
            );
            let _namespace_slot = namespace_slots
                .acquire()
                .await
                .map_err(|_| "the webhook is shutting down".to_owned())?;
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
        let started = tokio::time::Instant::now();
        let deadline = review_deadline.min(started + self.settings.deadline);
        match tokio::time::timeout_at(deadline, lookups).await {
            Ok(Ok(answers)) => answers,
            Ok(Err(reason)) => failed(reason),
            Err(_) => failed(format!(
                "the registry lookup took longer than {:?}",
                Duration::from_millis((deadline - started).as_millis() as u64)
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
                // The account's name is the pod's text, and the error may repeat it.
                return Err(format!(
                    "cannot read ServiceAccount {}/{} for its imagePullSecrets: {}",
                    ssi_core::names::shown(&request.namespace, 64),
                    ssi_core::names::shown(&request.service_account, 64),
                    ssi_core::names::shown(&e.to_string(), 256)
                ));
            }
        }
        // NB: the apiserver's ServiceAccount admission has usually copied the account's pull
        // secrets into the pod already; read each once.
        let mut seen = std::collections::HashSet::new();
        names.retain(|name| seen.insert(name.clone()));
        names.truncate(PULL_SECRETS_PER_REVIEW);
        let secrets: Api<Secret> = Api::namespaced(self.kube.clone(), &request.namespace);
        let mut credentials = Vec::new();
        for name in names {
            let _read = self
                .secret_reads
                .acquire()
                .await
                .map_err(|_| "the webhook is stopping".to_owned())?;
            let secret = match secrets.get_opt(&name).await {
                Ok(Some(secret)) => secret,
                Ok(None) => continue,
                Err(e) => {
                    return Err(format!(
                        "cannot read imagePullSecret {}/{}: {}",
                        ssi_core::names::shown(&request.namespace, 64),
                        ssi_core::names::shown(&name, 64),
                        ssi_core::names::shown(&e.to_string(), 256)
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
        let reference: Reference = image.parse().map_err(|_| {
            let shown = ssi_core::names::shown(image, 200);
            format!("image {shown:?} is not a valid image reference")
        })?;
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
        self.check_allowed(reference)?;
        let host = shown_host(reference);
        // The pod's text: a registry host may be as long as its author likes.
        let image = ssi_core::names::shown(image, 200);
        // NB: always this registry's slot first, then the shared one: no lookup holds a shared
        // slot while it waits for its registry's.
        let registry_slots = slots_of(&self.registry_slots, &host, LOOKUPS_PER_REGISTRY);
        let _registry_slot = registry_slots
            .acquire()
            .await
            .map_err(|_| format!("image {image}: the webhook is shutting down"))?;
        let _slot = self
            .lookup_slots
            .acquire()
            .await
            .map_err(|_| format!("image {image}: the webhook is shutting down"))?;
        let credentials: Vec<Option<&Credential>> = if candidates.is_empty() {
            vec![None]
        } else {
            candidates.iter().map(Some).collect()
        };
        let mut refused = None;
        for credential in credentials {
            match self
                .fetcher
                .image_config(reference, &host, credential)
                .await
            {
                Ok(config) => {
                    return image_command(&config)
                        .map_err(|reason| format!("image {image}: {reason}"));
                }
                // Another of the pod's credentials may open it.
                Err(unauthorized @ Failure::Unauthorized(_)) => refused = Some(unauthorized),
                Err(other) => return Err(format!("image {image}: {other}")),
            }
        }
        Err(format!(
            "image {image}: {}",
            refused.unwrap_or(Failure::Unauthorized(host))
        ))
    }

    /// With `--registry-allowed-hosts`, only the registries named there are asked. (Without it,
    /// each connection's address is checked as it is made, see [`crate::oci`].)
    fn check_allowed(&self, reference: &Reference) -> Result<(), String> {
        let allowed = &self.settings.allowed_hosts;
        if allowed.is_empty()
            || allowed
                .iter()
                .any(|host| same_registry(host, reference.resolve_registry()))
        {
            Ok(())
        } else {
            Err(format!(
                "the registry {} is not among the registries this webhook may ask \
                 (--registry-allowed-hosts)",
                shown_host(reference)
            ))
        }
    }
}

/// Cloud metadata and platform endpoints: refused even where private addresses are allowed.
const METADATA_ADDRESSES: [&str; 5] = [
    "169.254.169.254",
    "fd00:ec2::254",
    "fd20:ce::254",
    "100.100.100.200",
    "168.63.129.16",
];

/// Why `address` is off limits, or `None`. Says what kind of address it is, never which: the
/// answer goes back to whoever created the pod.
pub(crate) fn forbidden_address(
    address: std::net::IpAddr,
    allow_private: bool,
) -> Option<&'static str> {
    use std::net::{IpAddr, Ipv4Addr};
    let address = match address {
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let embedded = |high: u16, low: u16| {
                let [a, b] = high.to_be_bytes();
                let [c, d] = low.to_be_bytes();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                IpAddr::V4(v4)
            } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || segments[..3] == [0x64, 0xff9b, 1]
            {
                // NAT64 (well-known and local-use prefixes): reaches the IPv4 address in the
                // last 32 bits through the gateway.
                embedded(segments[6], segments[7])
            } else if segments[0] == 0x2002 {
                // 6to4: the IPv4 address is in the prefix.
                embedded(segments[1], segments[2])
            } else if segments[..6] == [0; 6] && (segments[6] != 0 || segments[7] > 1) {
                // IPv4-compatible (deprecated).
                embedded(segments[6], segments[7])
            } else {
                address
            }
        }
        v4 => v4,
    };
    if METADATA_ADDRESSES
        .iter()
        .any(|metadata| metadata.parse() == Ok(address))
    {
        return Some("a cloud metadata address");
    }
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_link_local() {
                Some("a link-local address (where cloud metadata services live)")
            } else if a == 0 || a >= 224 {
                Some("an address that is no single host")
            } else if (a, b, c) == (192, 0, 0) || (a == 198 && (b == 18 || b == 19)) {
                Some("a special-purpose address")
            } else if !allow_private && (v4.is_private() || (a == 100 && (64..128).contains(&b))) {
                Some("a private address (allow with --registry-allow-private)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("a loopback address")
            } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
                Some("a link-local address")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("an address that is no single host")
            } else if !allow_private && first & 0xfe00 == 0xfc00 {
                Some("a private address (allow with --registry-allow-private)")
            } else {
                None
            }
        }
    }
}

/// The registry's host as a message shows it (bounded: the image name is the pod's text).
fn shown_host(reference: &Reference) -> String {
    reference.resolve_registry().chars().take(100).collect()
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
/// At most [`REGISTRIES_PER_DOCKER_CONFIG`] entries are built; the rest is skipped unbuilt.
pub fn docker_config_credentials(bytes: &[u8], wrapped: bool) -> Vec<(String, Credential)> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Wrapped {
        #[serde(default)]
        auths: Auths,
    }
    let parsed = if wrapped {
        serde_json::from_slice::<Wrapped>(bytes).map(|config| config.auths)
    } else {
        serde_json::from_slice::<Auths>(bytes)
    };
    let Ok(Auths(entries)) = parsed else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|(host, entry)| {
            let (username, password) = if !entry.username.is_empty() {
                (entry.username, entry.password)
            } else {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(entry.auth)
                    .ok()?;
                let decoded = String::from_utf8(decoded).ok()?;
                let (user, password) = decoded.split_once(':')?;
                (user.to_owned(), password.to_owned())
            };
            Some((registry_host(&host), Credential { username, password }))
        })
        .collect()
}

/// A docker config's entries by host, sorted, at most [`REGISTRIES_PER_DOCKER_CONFIG`] of them.
#[derive(Default)]
struct Auths(BTreeMap<String, AuthEntry>);

/// One registry's credentials; other fields (`email`, ...) and values that are not text are
/// skipped unbuilt, and so is an entry that is not an object.
#[derive(Default)]
struct AuthEntry {
    username: String,
    password: String,
    auth: String,
}

/// The visit methods of a docker config's lenient reader: any value but the one it builds
/// (`visit_str`, `visit_map`) is skipped unbuilt and reads as the default.
macro_rules! skip_other_values {
    ($value:ty) => {
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<$value, E> {
            Ok(<$value>::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<$value, E> {
            Ok(<$value>::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<$value, E> {
            Ok(<$value>::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<$value, E> {
            Ok(<$value>::default())
        }
        fn visit_unit<E>(self) -> Result<$value, E> {
            Ok(<$value>::default())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<$value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(<$value>::default())
        }
    };
}

impl<'de> Deserialize<'de> for Auths {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Auths;
            skip_other_values!(Auths);
            fn visit_str<E>(self, _: &str) -> Result<Auths, E> {
                Ok(Auths::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Auths, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some(host) = map.next_key::<String>()? {
                    if entries.len() < REGISTRIES_PER_DOCKER_CONFIG {
                        entries.insert(host, map.next_value::<AuthEntry>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Auths(entries))
            }
        }
        deserializer.deserialize_any(Entries)
    }
}

impl<'de> Deserialize<'de> for AuthEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = AuthEntry;
            skip_other_values!(AuthEntry);
            fn visit_str<E>(self, _: &str) -> Result<AuthEntry, E> {
                Ok(AuthEntry::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AuthEntry, A::Error> {
                let mut entry = AuthEntry::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let field = match &*key {
                        "username" => &mut entry.username,
                        "password" => &mut entry.password,
                        "auth" => &mut entry.auth,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *field = map.next_value::<Text>()?.0;
                }
                Ok(entry)
            }
        }
        deserializer.deserialize_any(Fields)
    }
}

/// A string, or empty for any other value (skipped unbuilt).
#[derive(Default)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text;
            skip_other_values!(Text);
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text::default())
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
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

/// Largest ENTRYPOINT + CMD taken from an image, in bytes: answers are cached, and the registry
/// decides their size.
pub const MAX_IMAGE_COMMAND_BYTES: usize = 64 * 1024;
/// Largest ENTRYPOINT + CMD taken from an image, in arguments.
pub const MAX_IMAGE_COMMAND_ARGUMENTS: usize = 1024;

/// Only the fields read; serde skips the rest of the config without keeping it.
#[derive(serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(serde::Deserialize)]
struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
}

/// ENTRYPOINT and CMD from an image config (`{"config": {"Entrypoint": [..], "Cmd": [..]}}`).
fn image_command(config: &[u8]) -> Result<ImageCommand, String> {
    // NB: serde's message may quote the config; the pod's author gets our words only.
    let file: ConfigFile = serde_json::from_slice(config)
        .map_err(|_| "the image config has no usable ENTRYPOINT/CMD".to_owned())?;
    let run = file.config.unwrap_or(RunConfig {
        entrypoint: None,
        cmd: None,
    });
    let command = ImageCommand {
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
    };
    let arguments = command.entrypoint.iter().chain(&command.cmd);
    if arguments.clone().count() > MAX_IMAGE_COMMAND_ARGUMENTS
        || arguments.map(String::len).sum::<usize>() > MAX_IMAGE_COMMAND_BYTES
    {
        return Err(format!(
            "the image's ENTRYPOINT and CMD are larger than this webhook takes \
             ({MAX_IMAGE_COMMAND_BYTES} bytes, {MAX_IMAGE_COMMAND_ARGUMENTS} arguments)"
        ));
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_off_limits() {
        let forbidden =
            |text: &str, private: bool| forbidden_address(text.parse().unwrap(), private);
        for address in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "::1",
            "fe80::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "fd20:ce::254",
            "2002:7f00:1::",
            "::127.0.0.1",
            "fd00:ec2::254",
            "100.100.100.200",
            "168.63.129.16",
        ] {
            assert!(forbidden(address, true).is_some(), "{address}");
        }
        for address in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
        ] {
            assert!(forbidden(address, false).is_some(), "{address}");
            assert!(
                forbidden(address, true).is_none(),
                "{address} allowed as private"
            );
        }
        for address in ["8.8.8.8", "2001:4860::8888"] {
            assert!(forbidden(address, false).is_none(), "{address}");
        }
        assert!(
            forbidden("169.254.169.254", false)
                .unwrap()
                .contains("metadata")
        );
    }

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
        // Values of other types are skipped, not fatal.
        let odd = r#"{"auths": {"a.example": "x", "b.example": {"username": ["u"], "auth": 1},
            "c.example": {"username": "carol", "password": "pw", "email": {"x": [1]}}}}"#;
        let credentials = docker_config_credentials(odd.as_bytes(), true);
        assert_eq!(credentials.len(), 1);
        assert_eq!(credentials[0].1.username, "carol");
    }

    #[test]
    fn a_dense_docker_config_builds_a_bounded_number_of_entries() {
        // About 1 MiB of tiny entries, as a pull secret may hold.
        let entries: Vec<String> = (0..60_000)
            .map(|i| format!(r#""h{i}.example": {{"username": "u", "password": "p"}}"#))
            .collect();
        let dense = format!(r#"{{"auths": {{{}}}}}"#, entries.join(","));
        assert!(dense.len() > 1_000_000);
        let credentials = docker_config_credentials(dense.as_bytes(), true);
        assert_eq!(credentials.len(), REGISTRIES_PER_DOCKER_CONFIG);
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
            br#"{"architecture": "amd64", "config": {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"]}}"#,
        )
        .unwrap();
        assert_eq!(command.entrypoint, ["/bin/app"]);
        assert_eq!(command.cmd, ["--serve"]);
        assert_eq!(
            image_command(br#"{"config": {}}"#).unwrap(),
            ImageCommand::default()
        );
        assert!(image_command(b"[").is_err());
        let error = image_command(br#"{"config": {"Cmd": "quoted registry text"}}"#).unwrap_err();
        assert!(!error.contains("quoted"), "{error}");
        // Answers are cached: a registry cannot make one large.
        let many =
            serde_json::json!({"config": {"Cmd": vec![""; MAX_IMAGE_COMMAND_ARGUMENTS + 1]}});
        assert!(
            image_command(many.to_string().as_bytes())
                .unwrap_err()
                .contains("larger")
        );
        let long = serde_json::json!({"config": {"Entrypoint": ["x".repeat(MAX_IMAGE_COMMAND_BYTES + 1)]}});
        assert!(
            image_command(long.to_string().as_bytes())
                .unwrap_err()
                .contains("larger")
        );
    }
}
