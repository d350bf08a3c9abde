//! The `SecretsStoreImport` custom resource (`deckhouse.io/v1alpha1`, short name `ssi`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

pub use crate::names::{is_object_name, is_safe_path};

/// Which Vault keys a pod receives, under which file names, and how to log in to fetch them.
///
/// Connection fields left out fall back to the defaults the component was started with.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "deckhouse.io",
    version = "v1alpha1",
    kind = "SecretsStoreImport",
    plural = "secretsstoreimports",
    shortname = "ssi",
    namespaced,
    status = "SecretsStoreImportStatus",
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role"}"#,
    // NB: the API server shows the first value a column's path finds, so no column can sum the
    // nodes' entries: the default ones say whether any node fails, the wide ones show one node.
    printcolumn = r#"{"name":"Failing on","type":"string","jsonPath":".status.nodes[?(@.failing>0)].node","description":"A node where volumes fail to rotate (kubectl describe shows every node)"}"#,
    printcolumn = r#"{"name":"Error","type":"string","jsonPath":".status.nodes[?(@.failing>0)].lastError.code","description":"What fails there"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.nodes[0].node","priority":1,"description":"The first node of status.nodes (kubectl describe shows every node)"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.nodes[0].pods","priority":1,"description":"Pods that mount it on that node"}"#,
    printcolumn = r#"{"name":"Last rotation","type":"date","jsonPath":".status.nodes[0].lastRotation","priority":1,"description":"When its files last changed on that node"}"#,
    printcolumn = r#"{"name":"Last success","type":"date","jsonPath":".status.nodes[0].lastSuccess","priority":1,"description":"When a volume there was last found current (refreshed in the status every 10 minutes)"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SecretsStoreImportSpec {
    /// How the secrets are delivered. Only `CSI` (files on a CSI volume) exists today.
    #[serde(rename = "type")]
    pub import_type: ImportType,

    /// The role to log in as, at the store's auth method (`authMethod`).
    #[schemars(regex(pattern = r"^[-_\.a-zA-Z0-9]+$"))]
    pub role: String,

    /// How the store checks the pod's token (see [`crate::login::AuthMethod`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<crate::login::AuthMethod>,

    /// Mount path of the auth method in the store (default: the component's setting for that
    /// method, else the method's name: `kubernetes` or `jwt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Deckhouse's schema accepts leading and trailing `/` (`kube/`), so ours does; they are
    /// removed before use ([`SecretsStoreImportSpec::normalize`]).
    #[schemars(regex(pattern = r"^[-_./a-zA-Z0-9]+$"))]
    pub auth_path: Option<String>,

    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub namespace: Option<String>,

    /// Address of the store. Used only if the node driver's allow-list permits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://.+$"), length(max = 2048))]
    pub address: Option<String>,

    /// PEM bundle of the CA(s) that sign the store's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_cert: Option<String>,

    /// Audience of the ServiceAccount token presented at login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,

    /// Skip verification of the store's certificate. Refused unless the cluster operator allowed it.
    #[serde(
        default,
        rename = "skipTLSVerify",
        skip_serializing_if = "Option::is_none"
    )]
    pub skip_tls_verify: Option<bool>,

    /// The files to create, each from one key of one secret or rendered from several.
    #[schemars(length(min = 1, max = 256))]
    pub files: Vec<SecretFile>,
}

/// What the node drivers report about the SecretsStoreImport's volumes: one entry per node that
/// mounts it, each written by that node's driver alone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretsStoreImportStatus {
    /// One entry per node, keyed by the node's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub nodes: Vec<NodeStatus>,
}

/// One node's volumes of the SecretsStoreImport. Times are RFC 3339.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The node's name.
    pub node: String,
    /// Volumes that mount the SecretsStoreImport on the node.
    pub volumes: u32,
    /// Pods those volumes belong to.
    pub pods: u32,
    /// Volumes whose last rotation failed (they keep their previous files).
    pub failing: u32,
    /// When a volume's files last changed (written at publish, or rotated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<String>,
    /// When a volume was last found current in the store; refreshed here at most every 10
    /// minutes while nothing else changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// The earliest end of a lease or certificate the volumes hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest_end: Option<String>,
    /// The latest failure among the failing volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<StatusError>,
}

/// Why a rotation failed, without any value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct StatusError {
    /// The kind of failure, as the driver's gRPC code (`unavailable`, `permission_denied`, ...).
    pub code: String,
    /// What failed and what to do, as the pod's Event says it.
    pub message: String,
    /// When.
    pub at: String,
}

/// Delivery mechanism of a `SecretsStoreImport`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImportType {
    /// Files on a `secrets-store.csi.deckhouse.io` CSI volume.
    #[serde(rename = "CSI")]
    Csi,
}

/// One file of the volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretFile {
    /// File name inside the volume.
    #[schemars(regex(pattern = r"^[-_a-zA-Z0-9.]+$"))]
    pub name: String,

    /// Decode the value from base64 before writing it.
    #[serde(default)]
    pub decode_base64: bool,

    /// Where the value comes from: one key of one secret. Either this or `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<FileSource>,

    /// The file rendered from several secrets' fields instead (a `.env` file, a config, a
    /// connection string). Either this or `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<FileTemplate>,

    /// Permission bits of the file as an octal string (`"0400"`, `"0440"`, `"0644"`); the
    /// volume's default when absent (0644, or 0640 with the pod's fsGroup as the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^0?[4-7][0-7]{2}$"))]
    pub mode: Option<String>,
}

impl SecretFile {
    /// The permission bits `mode` asks for, if it is set and valid (see [`Self::validate_mode`]).
    pub fn permission_bits(&self) -> Option<u32> {
        self.validate_mode().ok().flatten()
    }

    /// `mode` as permission bits: three octal digits, optionally after a `0`, without the
    /// set-id and sticky bits; the reason otherwise.
    pub fn validate_mode(&self) -> Result<Option<u32>, String> {
        let Some(text) = &self.mode else {
            return Ok(None);
        };
        let digits = text
            .strip_prefix('0')
            .filter(|d| d.len() == 3)
            .unwrap_or(text);
        if digits.len() != 3 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(format!(
                "mode {text:?} must be three octal digits like \"0400\" or \"0644\""
            ));
        }
        let bits = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
        if bits & 0o400 == 0 {
            return Err(format!(
                "mode {text:?} leaves the file unreadable even to its owner; write at least 0400"
            ));
        }
        Ok(Some(bits))
    }
}

/// A file rendered from secrets: `sources` names each secret read, `text` is a template
/// (MiniJinja, Jinja2's syntax) over their fields, e.g. `DB_URL=postgres://{{ db.username }}:{{
/// db.password }}@db:5432/app`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct FileTemplate {
    /// Name used in the template -> API path of the secret below `/v1/`.
    #[schemars(length(min = 1))]
    pub sources: std::collections::BTreeMap<String, String>,
    /// The template.
    #[schemars(length(min = 1))]
    pub text: String,
}

/// Largest template text, in bytes: rendered on the privileged driver at every rotation.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// A key of a secret in the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct FileSource {
    /// Full API path of the secret below `/v1/`, e.g. `secret/data/app` for KV version 2.
    #[schemars(length(min = 1))]
    pub path: String,

    /// Key inside the secret's data.
    #[schemars(length(min = 1))]
    pub key: String,

    /// `GET` (the default) reads the secret; `POST` asks the engine to issue one, sending `args`
    /// as the JSON body (`pki/issue/<role>` with `common_name`). Files naming the same path,
    /// method and args come from one response, so a certificate and its key always match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,

    /// The request's JSON body for `method: POST`, field name -> value (the store parses numbers
    /// and booleans from their text, e.g. `ttl: "72h"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
}

/// How a file's source is asked of the store.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
pub enum Method {
    /// Read the secret (`GET /v1/<path>`).
    #[default]
    #[serde(rename = "GET")]
    Get,
    /// Have the engine issue a secret (`POST /v1/<path>` with `args`).
    #[serde(rename = "POST")]
    Post,
}

/// Most files one SecretsStoreImport may have.
pub const MAX_FILES: usize = 256;

/// Longest `spec.caCert`, `spec.address` and `spec.namespace` (the CRD's maxLength, repeated
/// for a cluster with an older CRD). They identify the store in every identity the driver
/// keys its sessions and shared reads by: a tenant's megabyte there would be hashed and copied
/// on every read of every volume of the node. A CA bundle of a store is a few certificates.
pub const MAX_CA_CERT_BYTES: usize = 64 * 1024;
/// See [`MAX_CA_CERT_BYTES`].
pub const MAX_ADDRESS_BYTES: usize = 2048;
/// See [`MAX_CA_CERT_BYTES`].
pub const MAX_NAMESPACE_BYTES: usize = 1024;
/// Most distinct `POST` sources (path, args) one SecretsStoreImport may have: each is a
/// secret issued for every volume, kept and renewed by the driver.
pub const MAX_ISSUES: usize = 8;

/// Most `args` one `POST` source may send.
pub const MAX_ARGS: usize = 32;
/// Largest value of one of those `args`, in bytes.
pub const MAX_ARG_BYTES: usize = 4096;

impl FileSource {
    /// The method, `GET` when left out.
    pub fn method(&self) -> Method {
        self.method.unwrap_or_default()
    }
}

/// Every rule a `SecretsStoreImportSpec` breaks, each phrased so that a person knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidSpec {
    /// One sentence per broken rule, in the order checked.
    pub problems: Vec<String>,
}

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid SecretsStoreImport spec: {}",
            self.problems.join("; ")
        )
    }
}

impl SecretFile {
    /// A file holding `key` of the secret at `path`, written as stored (not base64-decoded).
    pub fn new(name: impl Into<String>, path: impl Into<String>, key: impl Into<String>) -> Self {
        SecretFile {
            name: name.into(),
            decode_base64: false,
            source: Some(FileSource {
                path: path.into(),
                key: key.into(),
                method: None,
                args: BTreeMap::new(),
            }),
            template: None,
            mode: None,
        }
    }
}

impl SecretsStoreImportSpec {
    /// A CSI import of `files` as `role`, every optional field unset (the components' defaults).
    pub fn new(role: impl Into<String>, files: Vec<SecretFile>) -> Self {
        SecretsStoreImportSpec {
            import_type: ImportType::Csi,
            role: role.into(),
            auth_method: None,
            auth_path: None,
            namespace: None,
            address: None,
            ca_cert: None,
            audience: None,
            skip_tls_verify: None,
            files,
        }
    }

    /// Where and as what the SSI's pods log in, the component's `defaults` applied.
    pub fn login(&self, defaults: &crate::login::LoginDefaults) -> crate::login::Login {
        crate::login::Login::resolve(
            &self.role,
            self.auth_method,
            self.auth_path.as_deref(),
            defaults,
        )
    }

    /// Removes the leading and trailing `/` of `authPath` and of every `source.path`, which
    /// Deckhouse's schema accepts (`kube/`, `/demo-kv/data/x`) and the store's API does not
    /// need. Call before [`Self::validate`].
    pub fn normalize(&mut self) {
        let trim = |path: &mut String| {
            let trimmed = path.trim_matches('/');
            if trimmed.len() != path.len() {
                *path = trimmed.to_owned();
            }
        };
        if let Some(auth_path) = &mut self.auth_path {
            trim(auth_path);
        }
        for file in &mut self.files {
            if let Some(source) = &mut file.source {
                trim(&mut source.path);
            }
            if let Some(template) = &mut file.template {
                for path in template.sources.values_mut() {
                    trim(path);
                }
            }
        }
    }

    /// Checks every rule of the schema plus the driver-side ones a schema cannot express.
    ///
    /// Collects all problems rather than stopping at the first, so one round trip fixes them all.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut problems = Vec::new();

        if !is_word(&self.role, ".") {
            problems.push(format!(
                "spec.role {:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                self.role
            ));
        }
        // NB: the CRD's pattern, repeated: the driver spells identities out with '|' between
        // fields, and a cluster may run an older CRD or none.
        let mount_char = |c: char| c.is_ascii_alphanumeric() || "-_./".contains(c);
        if let Some(auth_path) = &self.auth_path
            && let Some(why) = unsafe_path(auth_path).or_else(|| {
                (!auth_path.chars().all(mount_char))
                    .then_some("has a character other than letters, digits, '-', '_', '.' and '/'")
            })
        {
            problems.push(format!(
                "spec.authPath {auth_path:?} {why}; write segments of letters, digits, '-', '_' \
                 and '.' separated by '/', like kubernetes or clusters/main"
            ));
        }
        for (field, value, most) in [
            ("caCert", &self.ca_cert, MAX_CA_CERT_BYTES),
            ("address", &self.address, MAX_ADDRESS_BYTES),
            ("namespace", &self.namespace, MAX_NAMESPACE_BYTES),
        ] {
            // NB: the value is the tenant's and may be large: its length only, not its text.
            if let Some(value) = value.as_ref().filter(|v| v.len() > most) {
                problems.push(format!(
                    "spec.{field} has {} bytes; at most {most} are allowed",
                    value.len()
                ));
            }
        }
        if let Some(address) = self
            .address
            .as_ref()
            .filter(|a| a.len() <= MAX_ADDRESS_BYTES)
        {
            let rest = address
                .strip_prefix("https://")
                .or_else(|| address.strip_prefix("http://"));
            if rest.is_none_or(str::is_empty) {
                problems.push(format!(
                    "spec.address {address:?} must start with http:// or https:// and name a host"
                ));
            }
        }
        if self.files.is_empty() {
            problems.push("spec.files must list at least one file".to_owned());
        }
        if self.files.len() > MAX_FILES {
            problems.push(format!(
                "spec.files has {} files; at most {MAX_FILES} are allowed",
                self.files.len()
            ));
        }
        let issues: HashSet<(&str, &BTreeMap<String, String>)> = self
            .files
            .iter()
            .filter_map(|file| file.source.as_ref())
            .filter(|source| source.method() == Method::Post)
            .map(|source| (source.path.as_str(), &source.args))
            .collect();
        if issues.len() > MAX_ISSUES {
            problems.push(format!(
                "spec.files name {} different POST sources (path and args); at most {MAX_ISSUES} \
                 are issued per volume: files that should come from one response must name the same path and args",
                issues.len()
            ));
        }

        let mut seen = HashSet::new();
        for (i, file) in self.files.iter().enumerate() {
            let name = &file.name;
            if !is_word(name, ".") {
                problems.push(format!(
                    "spec.files[{i}].name {name:?} must be non-empty and use only letters, digits, '-', '_' and '.'"
                ));
            } else if name == "." || name.starts_with("..") {
                // NB: kubelet-style atomic writes keep their own entries (`..data`,
                // `..2024_01_01...`) beside the user's files; a user file named like them could
                // replace the data link.
                problems.push(format!(
                    "spec.files[{i}].name {name:?} is reserved: names '.', '..' and names starting with '..' are not allowed"
                ));
            }
            if !seen.insert(name.as_str()) {
                problems.push(format!(
                    "spec.files[{i}].name {name:?} is used by more than one file; names must be unique"
                ));
            }
            match (&file.source, &file.template) {
                (Some(source), None) => {
                    let why = match source.method() {
                        Method::Get => unreadable_path(&source.path),
                        // NB: method_problems names a POST to the management API.
                        Method::Post => unsafe_path(&source.path),
                    };
                    if let Some(why) = why {
                        problems.push(format!(
                            "spec.files[{i}].source.path {:?} {why}; write a store path like secret/data/app",
                            source.path
                        ));
                    }
                    if source.key.is_empty() {
                        problems.push(format!("spec.files[{i}].source.key must not be empty"));
                    }
                    problems.extend(method_problems(i, source));
                }
                (None, Some(template)) => problems.extend(template_problems(i, template)),
                _ => problems.push(format!(
                    "spec.files[{i}] must have either source (one key of one secret) or template \
                     (a file rendered from several), not both or neither"
                )),
            }
            if let Err(why) = file.validate_mode() {
                problems.push(format!("spec.files[{i}].{why}"));
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidSpec { problems })
        }
    }
}

/// What is wrong with the method and args of `spec.files[i].source`.
fn method_problems(i: usize, source: &FileSource) -> Vec<String> {
    let mut problems = Vec::new();
    match source.method() {
        Method::Get if !source.args.is_empty() => problems.push(format!(
            "spec.files[{i}].source.args is only sent with method: POST; remove it or set the method"
        )),
        Method::Get => {}
        Method::Post => {
            if let Some(prefix) = crate::names::management_prefix(&source.path) {
                problems.push(format!(
                    "spec.files[{i}].source.path {:?}: POST under {prefix} is refused, it is the \
                     store's management API; POST only to an engine that issues secrets, like pki/issue/<role>",
                    source.path
                ));
            }
            if source.args.len() > MAX_ARGS {
                problems.push(format!(
                    "spec.files[{i}].source.args has {} entries; at most {MAX_ARGS} are sent",
                    source.args.len()
                ));
            }
            for (name, value) in &source.args {
                if !is_word(name, ".") {
                    problems.push(format!(
                        "spec.files[{i}].source.args name {name:?} must use only letters, digits, '-', '_' and '.'"
                    ));
                }
                if value.len() > MAX_ARG_BYTES {
                    problems.push(format!(
                        "spec.files[{i}].source.args.{name} is longer than {MAX_ARG_BYTES} bytes"
                    ));
                }
            }
        }
    }
    problems
}

/// What is wrong with the template of `spec.files[i]`; its text is the author's, not a secret.
fn template_problems(i: usize, template: &FileTemplate) -> Vec<String> {
    let mut problems = Vec::new();
    if template.sources.is_empty() {
        problems.push(format!(
            "spec.files[{i}].template.sources must name at least one secret"
        ));
    }
    for (name, path) in &template.sources {
        let identifier = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier {
            problems.push(format!(
                "spec.files[{i}].template.sources name {name:?} must be a template identifier \
                 (letters, digits and '_', not starting with a digit)"
            ));
        }
        if let Some(why) = unreadable_path(path) {
            problems.push(format!(
                "spec.files[{i}].template.sources.{name} {path:?} {why}; write a store path like secret/data/app"
            ));
        }
    }
    if template.text.trim().is_empty() {
        problems.push(format!("spec.files[{i}].template.text must not be empty"));
    }
    if template.text.len() > MAX_TEMPLATE_BYTES {
        problems.push(format!(
            "spec.files[{i}].template.text is larger than {MAX_TEMPLATE_BYTES} bytes"
        ));
    }
    problems
}

/// Why a store path cannot be read from: [`unsafe_path`], or the store's tokens and
/// management API ([`crate::names::refused_read`]).
fn unreadable_path(path: &str) -> Option<&'static str> {
    unsafe_path(path).or_else(|| crate::names::refused_read(path))
}

/// Why a store path (after [`SecretsStoreImportSpec::normalize`]) cannot be used, or `None`.
/// The reason names the rule broken, so that a person knows what to change.
fn unsafe_path(path: &str) -> Option<&'static str> {
    if is_safe_path(path) {
        None
    } else if path.is_empty() {
        Some("is empty (after removing leading and trailing '/')")
    } else if path
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        Some("has a '.' or '..' segment, which would point elsewhere in the store")
    } else if path.split('/').any(str::is_empty) {
        Some("has an empty segment ('//')")
    } else {
        Some(
            "has a character a URL path cannot carry as is ('?', '#', '%', '\\', space or control)",
        )
    }
}

/// Non-empty, only ASCII letters, digits, `-`, `_` and the `extra` characters.
fn is_word(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("python-backend", true)]
    #[case("a", true)]
    #[case("a.b-c.d0", true)]
    #[case("", false)]
    #[case("Python", false)]
    #[case("-a", false)]
    #[case("a-", false)]
    #[case("a..b", false)]
    #[case("../other", false)]
    #[case("a/b", false)]
    #[case("a?watch=1", false)]
    #[case("a%2F", false)]
    #[case("a b", false)]
    fn object_names(#[case] name: &str, #[case] valid: bool) {
        assert_eq!(is_object_name(name), valid, "{name:?}");
    }

    #[test]
    fn object_names_are_at_most_253_characters() {
        let label = "a".repeat(63);
        let long = [label.as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(!is_object_name(&long));
        assert!(is_object_name(&long[..253]));
    }

    fn mk_spec(files: &[(&str, &str, &str)]) -> SecretsStoreImportSpec {
        SecretsStoreImportSpec::new(
            "my-namespace1_backend",
            files
                .iter()
                .map(|(name, path, key)| SecretFile::new(*name, *path, *key))
                .collect(),
        )
    }

    const GUIDE_SSI: &str = r#"
apiVersion: deckhouse.io/v1alpha1
kind: SecretsStoreImport
metadata:
  name: python-backend
  namespace: my-namespace1
spec:
  type: CSI
  role: my-namespace1_backend
  files:
  - name: "db-password"
    source:
      path: "secret/data/database-for-python-app"
      key: "password"
"#;

    #[test]
    fn oversized_store_fields_are_refused_by_their_length_without_their_text() {
        let mut spec = mk_spec(&[("a", "secret/data/a", "k")]);
        spec.ca_cert = Some("C".repeat(MAX_CA_CERT_BYTES));
        spec.address = Some(format!("https://{}", "a".repeat(MAX_ADDRESS_BYTES - 8)));
        spec.namespace = Some("n".repeat(MAX_NAMESPACE_BYTES));
        assert_eq!(spec.validate(), Ok(()), "at the limits");
        spec.ca_cert = Some("C".repeat(MAX_CA_CERT_BYTES + 1));
        spec.address = Some(format!("https://{}", "a".repeat(MAX_ADDRESS_BYTES)));
        spec.namespace = Some("n".repeat(MAX_NAMESPACE_BYTES + 1));
        let message = spec.validate().unwrap_err().to_string();
        for expected in [
            "spec.caCert has 65537 bytes; at most 65536",
            "spec.address has 2056 bytes; at most 2048",
            "spec.namespace has 1025 bytes; at most 1024",
        ] {
            assert!(message.contains(expected), "{message}");
        }
        assert!(
            !message.contains("CCCC") && !message.contains("aaaa"),
            "{message}"
        );
    }

    #[test]
    fn the_guides_object_parses_with_defaults_and_is_valid() {
        let ssi: SecretsStoreImport = serde_yaml::from_str(GUIDE_SSI).expect("guide SSI parses");
        assert_eq!(ssi.spec.import_type, ImportType::Csi);
        assert_eq!(ssi.spec.files.len(), 1);
        assert!(
            !ssi.spec.files[0].decode_base64,
            "decodeBase64 defaults to false"
        );
        assert_eq!(ssi.spec.auth_path, None);
        assert_eq!(ssi.spec.validate(), Ok(()));
    }

    #[test]
    fn serialises_with_the_crd_field_names() {
        let mut spec = mk_spec(&[("a", "secret/data/x", "k")]);
        spec.skip_tls_verify = Some(true);
        spec.auth_path = Some("main-kube".into());
        let json = serde_json::to_value(&spec).expect("serialises");
        assert_eq!(json["type"], "CSI");
        assert_eq!(json["skipTLSVerify"], true);
        assert_eq!(json["authPath"], "main-kube");
        assert_eq!(json["files"][0]["decodeBase64"], false);
    }

    #[rstest]
    #[case::dot(".", "reserved")]
    #[case::dotdot("..", "reserved")]
    #[case::dotdot_prefix("..data", "reserved")]
    #[case::timestamp_dir("..2024_01_01_00_00_00.1", "reserved")]
    #[case::slash("a/b", "only letters")]
    #[case::empty("", "non-empty")]
    #[case::space("a b", "only letters")]
    fn rejects_bad_file_names(#[case] name: &str, #[case] expected: &str) {
        let err = mk_spec(&[(name, "secret/data/x", "k")])
            .validate()
            .expect_err("must be invalid");
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.problems[0].contains(expected), "{err}");
        assert!(err.problems[0].contains("spec.files[0].name"), "{err}");
    }

    #[rstest]
    #[case("db-password")]
    #[case("config.ini")]
    #[case(".hidden")]
    #[case("a..b")]
    fn accepts_ordinary_file_names(#[case] name: &str) {
        assert_eq!(mk_spec(&[(name, "secret/data/x", "k")]).validate(), Ok(()));
    }

    #[test]
    fn rejects_duplicate_names_and_reports_every_problem() {
        let mut spec = mk_spec(&[("a", "secret/data/x", "k"), ("a", "../sys", "")]);
        spec.role = "bad role".into();
        let err = spec.validate().expect_err("must be invalid");
        let text = err.to_string();
        assert!(text.contains("spec.role"), "{text}");
        assert!(text.contains("more than one file"), "{text}");
        assert!(text.contains("spec.files[1].source.path"), "{text}");
        assert!(text.contains("spec.files[1].source.key"), "{text}");
        assert_eq!(err.problems.len(), 4, "{text}");
    }

    #[test]
    fn rejects_an_empty_file_list() {
        let err = mk_spec(&[]).validate().expect_err("must be invalid");
        assert!(err.to_string().contains("at least one file"), "{err}");
    }

    #[rstest]
    #[case::ok(Some("kubernetes"), None, true)]
    #[case::nested(Some("clusters/main-kube"), None, true)]
    #[case::traversal(Some("../sys/raw"), None, false)]
    #[case::query(Some("main?x=1"), None, false)]
    #[case::field_separator(Some("main-kube|backend"), None, false)]
    #[case::colon(Some("main:kube"), None, false)]
    #[case::https(None, Some("https://vault.example.com:8200"), true)]
    #[case::no_scheme(None, Some("vault.example.com"), false)]
    #[case::no_host(None, Some("https://"), false)]
    fn checks_connection_fields(
        #[case] auth_path: Option<&str>,
        #[case] address: Option<&str>,
        #[case] valid: bool,
    ) {
        let mut spec = mk_spec(&[("a", "secret/data/x", "k")]);
        spec.auth_path = auth_path.map(Into::into);
        spec.address = address.map(Into::into);
        assert_eq!(spec.validate().is_ok(), valid, "{:?}", spec.validate());
    }

    #[rstest]
    #[case("secret/data/app", true)]
    #[case("kv/team/app", true)]
    #[case("/secret/data/app", false)]
    #[case("secret//app", false)]
    #[case("secret/./app", false)]
    #[case("secret/data/app?version=1", false)]
    #[case("secret/data/a#b", false)]
    fn recognises_safe_store_paths(#[case] path: &str, #[case] safe: bool) {
        assert_eq!(is_safe_path(path), safe);
    }

    #[rstest]
    #[case::absent(None, Ok(None))]
    #[case::four_digits(Some("0400"), Ok(Some(0o400)))]
    #[case::three_digits(Some("640"), Ok(Some(0o640)))]
    #[case::group_read(Some("0440"), Ok(Some(0o440)))]
    #[case::setuid(Some("4755"), Err("three octal digits"))]
    #[case::not_octal(Some("0800"), Err("three octal digits"))]
    #[case::words(Some("rw-r--r--"), Err("three octal digits"))]
    #[case::unreadable(Some("0200"), Err("unreadable even to its owner"))]
    fn file_modes_are_octal_permission_bits(
        #[case] mode: Option<&str>,
        #[case] expected: Result<Option<u32>, &str>,
    ) {
        let mut file = SecretFile::new("key.pem", "pki/issue/web", "private_key");
        file.mode = mode.map(Into::into);
        match expected {
            Ok(bits) => assert_eq!(file.validate_mode(), Ok(bits)),
            Err(reason) => {
                let error = file.validate_mode().unwrap_err();
                assert!(error.contains(reason), "{error}");
                let spec = SecretsStoreImportSpec::new("r", vec![file]);
                let problems = spec.validate().unwrap_err().problems;
                assert!(
                    problems[0].starts_with("spec.files[0].mode"),
                    "{problems:?}"
                );
            }
        }
    }

    #[test]
    fn a_file_has_a_source_or_a_template_and_templates_name_their_sources_well() {
        let templated = |sources: &[(&str, &str)], text: &str| SecretFile {
            source: None,
            template: Some(FileTemplate {
                sources: sources
                    .iter()
                    .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
                    .collect(),
                text: text.to_owned(),
            }),
            ..SecretFile::new("app.env", "", "")
        };
        let ok = templated(&[("db", "secret/data/db")], "X={{ db.password }}");
        assert_eq!(
            SecretsStoreImportSpec::new("r", vec![ok.clone()]).validate(),
            Ok(())
        );
        let both = SecretFile {
            source: SecretFile::new("x", "secret/data/db", "k").source,
            ..ok.clone()
        };
        let neither = SecretFile {
            template: None,
            ..ok
        };
        for (file, expected) in [
            (both, "either source"),
            (neither, "either source"),
            (templated(&[], "X"), "at least one secret"),
            (
                templated(&[("1db", "secret/data/db")], "X"),
                "template identifier",
            ),
            (templated(&[("db", "secret/../sys")], "X"), "'..' segment"),
            (
                templated(&[("db", "secret/data/db")], "  "),
                "must not be empty",
            ),
        ] {
            let problems = SecretsStoreImportSpec::new("r", vec![file])
                .validate()
                .unwrap_err()
                .problems;
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
    }

    #[test]
    fn post_sources_send_bounded_args_and_never_to_the_management_api() {
        let issued = |path: &str, method: Option<Method>, args: &[(&str, &str)]| {
            let mut file = SecretFile::new("tls.crt", path, "certificate");
            let source = file.source.as_mut().unwrap();
            source.method = method;
            source.args = args
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            SecretsStoreImportSpec::new("r", vec![file]).validate()
        };
        assert_eq!(
            issued(
                "pki/issue/web",
                Some(Method::Post),
                &[("common_name", "a.example")]
            ),
            Ok(())
        );
        let long = "x".repeat(MAX_ARG_BYTES + 1);
        let many: Vec<(String, String)> = (0..=MAX_ARGS)
            .map(|i| (format!("a{i}"), "v".into()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for (result, expected) in [
            (
                issued("pki/issue/web", None, &[("common_name", "a")]),
                "only sent with method: POST",
            ),
            (
                issued("sys/policies/acl/x", Some(Method::Post), &[]),
                "under sys/ is refused",
            ),
            (
                issued("auth/token/create", Some(Method::Post), &[]),
                "under auth/ is refused",
            ),
            (
                issued("auth/token/lookup-self", None, &[]),
                "is under auth/, where the store hands out tokens",
            ),
            (
                issued("sys/config/state/sanitized", Some(Method::Get), &[]),
                "is under sys/, the store's management API",
            ),
            (
                issued("pki/issue/web", Some(Method::Post), &[("common name", "a")]),
                "args name",
            ),
            (
                issued("pki/issue/web", Some(Method::Post), &[("ttl", &long)]),
                "longer than 4096",
            ),
            (
                issued("pki/issue/web", Some(Method::Post), &many),
                "at most 32",
            ),
        ] {
            let problems = result.unwrap_err().problems;
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
        let nine: Vec<SecretFile> = (0..=MAX_ISSUES)
            .map(|i| {
                let mut file = SecretFile::new(format!("f{i}"), "pki/issue/web", "certificate");
                let source = file.source.as_mut().unwrap();
                source.method = Some(Method::Post);
                source.args = [("common_name".to_owned(), format!("a{i}.example"))].into();
                file
            })
            .collect();
        let problems = SecretsStoreImportSpec::new("r", nine)
            .validate()
            .unwrap_err()
            .problems;
        assert!(
            problems.iter().any(|p| p.contains("at most 8")),
            "{problems:?}"
        );
        let yaml = "name: tls.crt\nsource:\n  path: pki/issue/web\n  key: certificate\n  method: POST\n  args: {common_name: a.example, ttl: 72h}\n";
        let file: SecretFile = serde_yaml::from_str(yaml).expect("the CRD's spelling parses");
        assert_eq!(file.source.as_ref().unwrap().method(), Method::Post);
        assert_eq!(file.source.unwrap().args["ttl"], "72h");
    }
}
