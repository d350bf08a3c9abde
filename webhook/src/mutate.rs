//! The pure part of the webhook: one pod-template mutation for every workload kind.
//!
//! Objects are handled as JSON, never as typed structs: a typed round trip would silently drop
//! fields this build does not know (newer Kubernetes versions), and the diff would then remove
//! them from the user's object.

use crate::annotations;
use crate::refusal::Refusal;
use crate::shape::Shape;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use jsonptr::{PointerBuf, Token};
use serde_json::{Value, json};
use ssi_core::names::shown;
use ssi_core::{ATTR_SECRETS_STORE_IMPORT, DRIVER_NAME};
use std::collections::HashSet;

/// Pod-template annotation adding secrets-store volumes: `"<ssi>"` or `"<ssi>=<path>,..."`.
pub const ANNOTATION_IMPORT: &str = "secrets-store.deckhouse.io/import";
/// Object annotation turning the subPath denial into a warning.
pub const ANNOTATION_ALLOW_SUBPATH: &str = "secrets-store.deckhouse.io/allow-subpath";
/// Pod-template annotation the webhook keeps in step with a workload's allow-subpath, so that
/// the Pods the workload creates are admitted too.
pub const ANNOTATION_ALLOW_SUBPATH_INHERITED: &str =
    "secrets-store.deckhouse.io/allow-subpath-inherited";
/// [`ANNOTATION_ALLOW_SUBPATH_INHERITED`] without our prefix, as [`annotations::get`] takes it.
const ALLOW_SUBPATH_INHERITED_NAME: &str = "allow-subpath-inherited";
/// Mount path of the shorthand when the annotation names none.
pub const DEFAULT_MOUNT_PATH: &str = "/mnt/secrets";

/// What to do with a `subPath` mount of a secrets-store volume, which never sees a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SubpathPolicy {
    /// Refuse the object, naming the mount and the fix (the default).
    Deny,
    /// Admit it with a warning.
    Warn,
}

/// The result of mutating one object.
#[derive(Debug, Default, PartialEq)]
pub struct Mutation {
    /// Warnings for the admission response: risky but legal.
    pub warnings: Vec<String>,
    /// SecretsStoreImports the object references, for the existence check.
    pub imports: Vec<String>,
    /// The JSON patch of what was changed, as it was changed: empty when nothing was. Complete
    /// unless `reshaped`.
    pub patch: Vec<PatchOperation>,
    /// Whether the shorthand annotation added volumes and mounts, which `patch` does not hold:
    /// the patch is then the diff of the object before and after.
    pub reshaped: bool,
}

/// A JSON pointer of `at` and then `more`.
fn pointer(at: &[&str], more: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(at.iter().chain(more).map(|key| Token::new(*key)))
}

/// Every part of an object [`mutate`] reads or changes, so that a review builds only these
/// ([`crate::shape`]). Keep it in step with `mutate` and `annotations`:
/// `review::tests::pruned_objects_get_the_whole_objects_answers` compares the two. The patch of
/// a pruned object is right for the whole object only while `mutate` adds and sets, inside kept
/// parts, and never removes a key, shortens an array or replaces a container or a volume whole:
/// a removal or a replacement computed on the tree would drop what the tree skipped.
pub static READ_BY_MUTATE: Shape = Shape::Keys(&[
    ("kind", Shape::All),
    ("metadata", METADATA),
    (
        "spec",
        Shape::Keys(&[
            // Workloads: the pod template.
            ("template", TEMPLATE),
            // CronJobs: the job template's annotations (the copy of allow-subpath its Jobs
            // inherit) and its pod template.
            (
                "jobTemplate",
                Shape::Keys(&[
                    ("metadata", METADATA),
                    ("spec", Shape::Keys(&[("template", TEMPLATE)])),
                ]),
            ),
            // Pods, which are their own template: the pod spec.
            ("volumes", Shape::All),
            ("initContainers", CONTAINERS),
            ("containers", CONTAINERS),
            ("ephemeralContainers", CONTAINERS),
        ]),
    ),
]);

/// The name (for messages) and our annotations.
const METADATA: Shape = Shape::Keys(&[
    ("name", Shape::All),
    ("generateName", Shape::All),
    ("annotations", Shape::All),
]);

const TEMPLATE: Shape = Shape::Keys(&[
    ("metadata", METADATA),
    (
        "spec",
        Shape::Keys(&[
            ("volumes", Shape::All),
            ("initContainers", CONTAINERS),
            ("containers", CONTAINERS),
            ("ephemeralContainers", CONTAINERS),
        ]),
    ),
]);

const CONTAINERS: Shape = Shape::Each(&Shape::Keys(&[
    ("name", Shape::All),
    ("volumeMounts", Shape::All),
]));

/// Where the pod template of each supported kind lives.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

/// Mutates `object` (a Pod or a workload) in place. `Err` is a refusal for a person.
pub fn mutate(object: &mut Value, policy: SubpathPolicy) -> Result<Mutation, Refusal> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = object
        .get("metadata")
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    // Quoted in every message about the object: its author chose how long they are.
    let workload = format!("{} {}", shown(kind, QUOTED_NAME), shown(name, QUOTED_NAME));
    // Its own annotation, or the copy a workload that created it keeps in its template.
    let allow_subpath = annotations::flag(object, "allow-subpath", &workload)?.unwrap_or(false)
        || annotations::get(object, ALLOW_SUBPATH_INHERITED_NAME) == Some("true");
    let Some(path) = template_path(kind) else {
        return Ok(Mutation::default());
    };
    let mut patch = Vec::new();
    // The Jobs a CronJob creates carry its job template's annotations: the copy goes there too.
    if kind == "CronJob"
        && let Some(job_template) = object
            .get_mut("spec")
            .and_then(|spec| spec.get_mut("jobTemplate"))
            .filter(|job| job.is_object())
    {
        let inherited =
            annotations::get(job_template, ALLOW_SUBPATH_INHERITED_NAME) == Some("true");
        if allow_subpath != inherited {
            set_template_annotation(
                job_template,
                ANNOTATION_ALLOW_SUBPATH_INHERITED,
                allow_subpath.then_some("true"),
                (&["spec", "jobTemplate"], &mut patch),
            );
        }
    }
    let mut template = &mut *object;
    for key in path {
        match template.get_mut(*key) {
            Some(next) if next.is_object() => template = next,
            _ => {
                return Ok(Mutation {
                    patch,
                    ..Mutation::default()
                });
            }
        }
    }
    // A workload's annotation covers the Pods it creates: they carry only the template's
    // annotations, so the template gets a copy of it under a name of its own, kept in step with
    // the workload's (removed with it), and their own reviews see it. An allow-subpath the
    // template has itself is its author's, and left alone.
    let template_allows = annotations::flag(template, "allow-subpath", &workload)?.unwrap_or(false);
    let inherited = annotations::get(template, ALLOW_SUBPATH_INHERITED_NAME) == Some("true");
    if !path.is_empty() {
        if allow_subpath && !inherited {
            set_template_annotation(
                template,
                ANNOTATION_ALLOW_SUBPATH_INHERITED,
                Some("true"),
                (path, &mut patch),
            );
        } else if !allow_subpath && inherited {
            set_template_annotation(
                template,
                ANNOTATION_ALLOW_SUBPATH_INHERITED,
                None,
                (path, &mut patch),
            );
        }
    }
    let policy = if allow_subpath || template_allows {
        SubpathPolicy::Warn
    } else {
        policy
    };
    let mut mutation = mutate_template(template, &workload, policy, (path, &mut patch))?;
    mutation.patch = patch;
    Ok(mutation)
}

/// Where a change is made (the pointer's keys) and the patch it is recorded in.
type Recording<'p, 'a> = (&'p [&'a str], &'p mut Vec<PatchOperation>);

/// Sets (or with `None` removes) an annotation of a pod template, creating its metadata and
/// annotations as needed, and records the change at `at`.
fn set_template_annotation(
    template: &mut Value,
    key: &str,
    value: Option<&str>,
    (at, patch): Recording,
) {
    let Some(template) = template.as_object_mut() else {
        return;
    };
    let had_metadata = template.contains_key("metadata");
    let metadata = template
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    let had_annotations = metadata.contains_key("annotations");
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(annotations) = annotations.as_object_mut() else {
        return;
    };
    let before = match value {
        Some(value) => annotations.insert(key.to_owned(), Value::String(value.to_owned())),
        None => annotations.remove(key),
    };
    let operation = if !had_metadata {
        add(pointer(at, &["metadata"]), Value::Object(metadata.clone()))
    } else if !had_annotations {
        add(
            pointer(at, &["metadata", "annotations"]),
            Value::Object(annotations.clone()),
        )
    } else {
        let path = pointer(at, &["metadata", "annotations", key]);
        match (value, before) {
            (Some(value), before) if before.as_ref().and_then(Value::as_str) != Some(value) => {
                add(path, Value::String(value.to_owned()))
            }
            (None, Some(_)) => PatchOperation::Remove(RemoveOperation { path }),
            _ => return,
        }
    };
    patch.push(operation);
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

fn mutate_template(
    template: &mut Value,
    workload: &str,
    policy: SubpathPolicy,
    (at, patch): Recording,
) -> Result<Mutation, Refusal> {
    let mut mutation = Mutation::default();
    let shorthand = annotations::get(template, "import").map(str::to_owned);
    let Some(spec) = template.get_mut("spec").filter(|s| s.is_object()) else {
        return Ok(mutation);
    };
    if let Some(annotation) = shorthand {
        add_shorthand_volumes(spec, &annotation, workload)?;
        mutation.reshaped = true;
    }

    // Every secrets-store volume: it must name an SSI, and it is read-only. Names are looked up
    // in sets: an object may list any number of volumes and mounts (validation comes after
    // admission), and comparing each with each would let one object hold a worker for minutes.
    let mut volumes = HashSet::new();
    let mut imported = HashSet::new();
    if let Some(list) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for (index, volume) in list.iter_mut().enumerate() {
            let volume_name = volume_name(volume);
            let Some(csi) = volume
                .get_mut("csi")
                .filter(|c| c.get("driver").and_then(Value::as_str) == Some(DRIVER_NAME))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let ssi = csi
                .get("volumeAttributes")
                .and_then(|attributes| attributes.get(ATTR_SECRETS_STORE_IMPORT))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Refusal::Invalid(format!(
                        "{workload}: volume {:?} uses the {DRIVER_NAME} driver without \
                         volumeAttributes.{ATTR_SECRETS_STORE_IMPORT}; set it to the name of a SecretsStoreImport \
                         in the same namespace",
                        shown(&volume_name, QUOTED_NAME)
                    ))
                })?;
            // kubelet's own keys: a pod that sets one tries to speak for kubelet.
            if let Some(key) = csi
                .get("volumeAttributes")
                .and_then(Value::as_object)
                .and_then(|attributes| {
                    attributes
                        .keys()
                        .find(|key| key.starts_with("csi.storage.k8s.io/"))
                })
            {
                return Err(Refusal::Forbidden(format!(
                    "{workload}: volume {:?} sets volumeAttributes.{:?}; the \
                     csi.storage.k8s.io/ keys are kubelet's to set: remove it",
                    shown(&volume_name, QUOTED_NAME),
                    shown(key, QUOTED_PATH)
                )));
            }
            let index = index.to_string();
            set_read_only(
                csi,
                (&[at, &["spec", "volumes", &index, "csi"]].concat(), patch),
            );
            if imported.insert(ssi.clone()) {
                mutation.imports.push(ssi);
            }
            volumes.insert(volume_name);
        }
    }

    // Every mount of them, in every kind of container: read-only, and no subPath.
    let mut unwarned_sub_paths = 0usize;
    for containers in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(list) = spec.get_mut(containers).and_then(Value::as_array_mut) else {
            continue;
        };
        for (container_index, container) in list.iter_mut().enumerate() {
            let container_name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("<unnamed>");
            let container_name = shown(container_name, QUOTED_NAME).into_owned();
            let Some(mounts) = container
                .get_mut("volumeMounts")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for (mount_index, mount) in mounts.iter_mut().enumerate() {
                let Some(mount) = mount.as_object_mut() else {
                    continue;
                };
                let Some(volume) = mount
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| volumes.contains(*n))
                else {
                    continue;
                };
                let sub_path = ["subPath", "subPathExpr"].into_iter().find(|key| {
                    mount
                        .get(*key)
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
                });
                if let Some(key) = sub_path {
                    let volume = shown(volume, QUOTED_NAME);
                    let mount_path = mount
                        .get("mountPath")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let mount_path = shown(mount_path, QUOTED_PATH);
                    let message = format!(
                        "{workload}: container {container_name:?} mounts secrets-store volume {volume:?} at {mount_path:?} \
                         with {key}; such a mount never sees secret rotation. Mount the volume as a directory \
                         (drop {key}) and read the file from it"
                    );
                    match policy {
                        SubpathPolicy::Deny => {
                            return Err(Refusal::Forbidden(format!(
                                "{message}, or set the annotation {ANNOTATION_ALLOW_SUBPATH}: \"true\" on the object to accept stale secrets"
                            )));
                        }
                        // One warning per mount, up to a few: the object may hold thousands.
                        SubpathPolicy::Warn => {
                            if mutation.warnings.len() < MAX_SUBPATH_WARNINGS {
                                mutation.warnings.push(message);
                            } else {
                                unwarned_sub_paths += 1;
                            }
                        }
                    }
                }
                let (container_index, mount_index) =
                    (container_index.to_string(), mount_index.to_string());
                let keys = [
                    "spec",
                    containers,
                    &container_index,
                    "volumeMounts",
                    &mount_index,
                ];
                set_read_only(mount, (&[at, &keys].concat(), patch));
            }
        }
    }
    if unwarned_sub_paths > 0 {
        mutation.warnings.push(format!(
            "{workload}: {unwarned_sub_paths} more mounts of secrets-store volumes use subPath or subPathExpr"
        ));
    }
    Ok(mutation)
}

/// Sets `readOnly: true` unless it is, and records the change at `at`.
fn set_read_only(map: &mut serde_json::Map<String, Value>, (at, patch): Recording) {
    if map.get("readOnly") == Some(&Value::Bool(true)) {
        return;
    }
    map.insert("readOnly".into(), Value::Bool(true));
    patch.push(add(pointer(at, &["readOnly"]), Value::Bool(true)));
}

fn volume_name(volume: &Value) -> String {
    volume
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned()
}

/// Characters of a name (an object's, a container's, a volume's) a message quotes.
const QUOTED_NAME: usize = 64;
/// Characters of a path or key a message quotes.
const QUOTED_PATH: usize = 128;
/// subPath mounts warned about one by one; the rest are counted in one more warning.
const MAX_SUBPATH_WARNINGS: usize = 8;

/// SecretsStoreImports one shorthand annotation may name: far more than a pod mounts, few enough
/// that adding their volumes and mounts stays cheap whatever else the object holds.
pub const MAX_SHORTHAND_IMPORTS: usize = 64;
/// Bytes of one shorthand mount path: longer than any real one, and the shorthand copies each
/// into every app container.
pub const MAX_MOUNT_PATH_BYTES: usize = 1024;
/// Mounts one shorthand annotation may add (imports x app containers): the rest of the object is
/// bounded by the parse's value budget, and these come on top of it
/// (`router::MUTATION_ALLOWANCE`).
pub const MAX_SHORTHAND_MOUNTS: usize = 256;
/// Bytes of mount paths one shorthand annotation may add (its paths x app containers).
pub const MAX_SHORTHAND_PATH_BYTES: usize = 64 * 1024;

/// Parses the shorthand annotation into (SSI, mount path) pairs.
pub fn parse_import_annotation(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut imports: Vec<(String, String)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if imports.len() == MAX_SHORTHAND_IMPORTS {
            return Err(format!(
                "it names more than {MAX_SHORTHAND_IMPORTS} SecretsStoreImports; list the rest as csi volumes"
            ));
        }
        let (ssi, path) = match item.split_once('=') {
            Some((ssi, path)) => (ssi.trim(), path.trim()),
            None => (item, DEFAULT_MOUNT_PATH),
        };
        let dns_name = !ssi.is_empty()
            && ssi.len() <= 253
            && ssi
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !ssi.starts_with(['-', '.'])
            && !ssi.ends_with(['-', '.']);
        if !dns_name {
            return Err(format!(
                "{:?} is not a SecretsStoreImport name (lowercase letters, digits, '-' and '.')",
                shown(ssi, QUOTED_NAME)
            ));
        }
        if path.len() > MAX_MOUNT_PATH_BYTES {
            return Err(format!(
                "mount path {:?} of {ssi:?} is longer than {MAX_MOUNT_PATH_BYTES} bytes",
                shown(path, QUOTED_PATH)
            ));
        }
        if !path.starts_with('/') || path.split('/').any(|s| s == "..") {
            return Err(format!(
                "mount path {:?} of {ssi:?} must be absolute and without '..'",
                shown(path, QUOTED_PATH)
            ));
        }
        if imports.iter().any(|(_, p)| p == path) {
            return Err(format!(
                "mount path {:?} is used twice",
                shown(path, QUOTED_PATH)
            ));
        }
        // Each import is a volume named after its SSI: two names that map to one volume would
        // silently lose the second mount.
        let volume = shorthand_volume_name(ssi);
        if let Some((other, _)) = imports
            .iter()
            .find(|(other, _)| shorthand_volume_name(other) == volume)
        {
            return Err(if other == ssi {
                format!("{ssi:?} is named twice; mount it once, or add a second csi volume for it")
            } else {
                format!(
                    "{other:?} and {ssi:?} would both be volume {volume:?}; import one of them as a csi volume"
                )
            });
        }
        imports.push((ssi.to_owned(), path.to_owned()));
    }
    if imports.is_empty() {
        return Err("the annotation names no SecretsStoreImport".into());
    }
    Ok(imports)
}

/// The volume the shorthand adds for `ssi`: a DNS label derived from the SSI's name.
fn shorthand_volume_name(ssi: &str) -> String {
    let mut name = format!("secrets-store-{}", ssi.replace('.', "-"));
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

fn add_shorthand_volumes(
    spec: &mut Value,
    annotation: &str,
    workload: &str,
) -> Result<(), Refusal> {
    let imports = parse_import_annotation(annotation)
        .map_err(|e| Refusal::Invalid(format!("{workload}: annotation {ANNOTATION_IMPORT}: {e}; write \"<ssi>\" or \"<ssi>=<path>,<ssi2>=<path2>\"")))?;
    let app_containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let path_bytes: usize = imports.iter().map(|(_, path)| path.len()).sum();
    if path_bytes * app_containers > MAX_SHORTHAND_PATH_BYTES {
        return Err(Refusal::Invalid(format!(
            "{workload}: annotation {ANNOTATION_IMPORT} would add {} bytes of mount paths ({path_bytes} in each of \
             {app_containers} containers), more than {MAX_SHORTHAND_PATH_BYTES}; use shorter paths, or mount the \
             volumes as csi volumes where they are needed",
            path_bytes * app_containers
        )));
    }
    if imports.len() * app_containers > MAX_SHORTHAND_MOUNTS {
        return Err(Refusal::Invalid(format!(
            "{workload}: annotation {ANNOTATION_IMPORT} would add {} mounts ({} imports in each of {app_containers} \
             containers), more than {MAX_SHORTHAND_MOUNTS}; mount the volumes as csi volumes where they are needed",
            imports.len() * app_containers,
            imports.len()
        )));
    }
    for (ssi, mount_path) in imports {
        let volume = shorthand_volume_name(&ssi);
        let Some(spec_map) = spec.as_object_mut() else {
            return Err(Refusal::Invalid(format!(
                "{workload}: the pod spec is not an object"
            )));
        };
        let Some(volumes) = spec_map
            .entry("volumes")
            .or_insert_with(|| json!([]))
            .as_array_mut()
        else {
            return Err(Refusal::Invalid(format!(
                "{workload}: spec.volumes is not a list"
            )));
        };
        let existing = volumes
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(volume.as_str()));
        if let Some(existing) = existing {
            // Ours from an earlier review of the same object, or someone else's volume that
            // the shorthand must not mount in its place.
            let csi = &existing["csi"];
            let same_import = csi["driver"] == DRIVER_NAME
                && csi["volumeAttributes"][ATTR_SECRETS_STORE_IMPORT] == ssi.as_str();
            if !same_import {
                return Err(Refusal::Invalid(format!(
                    "{workload}: annotation {ANNOTATION_IMPORT}: spec.volumes already has a volume named {volume:?} \
                     that is not SecretsStoreImport {ssi:?}'s; rename that volume or import {ssi:?} as a csi volume"
                )));
            }
        } else {
            volumes.push(json!({
                "name": volume,
                "csi": {"driver": DRIVER_NAME, "readOnly": true, "volumeAttributes": {ATTR_SECRETS_STORE_IMPORT: ssi}}
            }));
        }
        let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            let container = container.as_object_mut().ok_or_else(|| {
                Refusal::Invalid(format!("{workload}: a container is not an object"))
            })?;
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let taken = mounts.iter().any(|m| {
                m.get("name").and_then(Value::as_str) == Some(volume.as_str())
                    || m.get("mountPath").and_then(Value::as_str) == Some(mount_path.as_str())
            });
            if !taken {
                mounts.push(json!({"name": volume, "mountPath": mount_path, "readOnly": true}));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// The guide's Deployment.
    fn mk_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "backend", "namespace": "my-namespace1", "labels": {"app": "backend"}},
            "spec": {
                "selector": {"matchLabels": {"app": "backend"}},
                "template": {
                    "metadata": {"labels": {"app": "backend"}},
                    "spec": {
                        "serviceAccountName": "backend-sa",
                        "containers": [{"image": "some/app:0.0.1", "name": "backend",
                                        "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets"}]}],
                        "volumes": [{"name": "secrets", "csi": {"driver": DRIVER_NAME,
                                     "volumeAttributes": {"secretsStoreImport": "python-backend"}}}]
                    }
                }
            }
        })
    }

    /// Mutates, checks the patch reproduces the mutation and that a second run changes nothing;
    /// and that the patch mutate recorded (unless the shorthand reshaped the object) does what
    /// the diff does, and is empty exactly when nothing changed.
    fn apply(mut object: Value, policy: SubpathPolicy) -> Result<(Value, Mutation), Refusal> {
        let original = object.clone();
        let mutation = mutate(&mut object, policy)?;
        let patch = json_patch::diff(&original, &object);
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &patch).expect("patch applies");
        assert_eq!(patched, object);
        if !mutation.reshaped {
            let mut recorded = original;
            json_patch::patch(&mut recorded, &mutation.patch).expect("recorded patch applies");
            assert_eq!(recorded, object, "{:?}", mutation.patch);
            assert_eq!(mutation.patch.is_empty(), patch.0.is_empty());
        }
        let mut again = object.clone();
        let second = mutate(&mut again, policy).expect("idempotent");
        assert!(
            json_patch::diff(&object, &again).0.is_empty(),
            "second run must not change anything"
        );
        assert!(second.patch.is_empty(), "{:?}", second.patch);
        Ok((object, mutation))
    }

    #[test]
    fn the_guides_deployment_gets_read_only_volume_and_mount_and_nothing_else() {
        let (object, mutation) = apply(mk_deployment(), SubpathPolicy::Deny).unwrap();
        let spec = &object["spec"]["template"]["spec"];
        assert_eq!(spec["volumes"][0]["csi"]["readOnly"], true);
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["readOnly"], true);
        assert_eq!(mutation.imports, ["python-backend"]);
        assert!(mutation.warnings.is_empty());
        let mut expected = mk_deployment();
        expected["spec"]["template"]["spec"]["volumes"][0]["csi"]["readOnly"] = json!(true);
        expected["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["readOnly"] =
            json!(true);
        assert_eq!(object, expected, "unrelated fields untouched");
    }

    #[rstest]
    #[case::pod("Pod")]
    #[case::statefulset("StatefulSet")]
    #[case::daemonset("DaemonSet")]
    #[case::replicaset("ReplicaSet")]
    #[case::job("Job")]
    #[case::cronjob("CronJob")]
    fn every_kind_goes_through_the_same_template_mutation(#[case] kind: &str) {
        let template = mk_deployment()["spec"]["template"].clone();
        let object = match kind {
            "Pod" => json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": template["spec"]}),
            "CronJob" => {
                json!({"kind": kind, "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": template}}}})
            }
            _ => json!({"kind": kind, "metadata": {"name": "w"}, "spec": {"template": template}}),
        };
        let (object, _) = apply(object, SubpathPolicy::Deny).unwrap();
        let spec = match kind {
            "Pod" => &object["spec"],
            "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            _ => &object["spec"]["template"]["spec"],
        };
        assert_eq!(spec["volumes"][0]["csi"]["readOnly"], true, "{kind}");
        assert_eq!(
            spec["containers"][0]["volumeMounts"][0]["readOnly"], true,
            "{kind}"
        );
    }

    #[rstest]
    #[case::sub_path("subPath", "containers")]
    #[case::sub_path_expr("subPathExpr", "containers")]
    #[case::init_container("subPath", "initContainers")]
    fn sub_path_mounts_are_denied_with_the_fix(#[case] key: &str, #[case] containers: &str) {
        let mut object = mk_deployment();
        let spec = &mut object["spec"]["template"]["spec"];
        spec[containers] = json!([{"name": "app", "image": "x",
            "volumeMounts": [{"name": "secrets", "mountPath": "/app/settings.ini", key: "settings.ini"}]}]);
        let Refusal::Forbidden(denial) = apply(object, SubpathPolicy::Deny).unwrap_err() else {
            panic!("a policy refusal")
        };
        for needle in [
            "Deployment backend",
            "\"app\"",
            "\"secrets\"",
            "/app/settings.ini",
            key,
            "never sees secret rotation",
            "Mount the volume as a directory",
            ANNOTATION_ALLOW_SUBPATH,
        ] {
            assert!(denial.contains(needle), "{needle:?} missing from {denial}");
        }
    }

    #[test]
    fn sub_path_is_a_warning_with_the_flag_or_the_annotation() {
        let mut object = mk_deployment();
        object["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["subPath"] =
            json!("db-password");
        let (_, mutation) = apply(object.clone(), SubpathPolicy::Warn).unwrap();
        assert_eq!(mutation.warnings.len(), 1);
        object["metadata"]["annotations"] = json!({ANNOTATION_ALLOW_SUBPATH: "true"});
        let (_, mutation) = apply(object, SubpathPolicy::Deny).unwrap();
        assert_eq!(mutation.warnings.len(), 1);
        assert!(mutation.warnings[0].contains("subPath"));
    }

    #[test]
    fn sub_path_warnings_are_few_and_quote_little_of_what_the_object_says() {
        // Names and paths as long as the object's author likes, and a thousand subPath mounts.
        let long = "x".repeat(100_000);
        let mut object = mk_deployment();
        object["metadata"]["name"] = json!(long);
        object["metadata"]["annotations"] = json!({ANNOTATION_ALLOW_SUBPATH: "true"});
        let container = &mut object["spec"]["template"]["spec"]["containers"][0];
        container["name"] = json!(long);
        container["volumeMounts"] = (0..1000)
            .map(
                |i| json!({"name": "secrets", "mountPath": format!("/{long}/{i}"), "subPath": "k"}),
            )
            .collect();
        let (_, mutation) = apply(object, SubpathPolicy::Deny).unwrap();
        assert_eq!(mutation.warnings.len(), MAX_SUBPATH_WARNINGS + 1);
        assert!(
            mutation.warnings[MAX_SUBPATH_WARNINGS].contains("992 more mounts"),
            "{:?}",
            mutation.warnings.last()
        );
        let longest = mutation.warnings.iter().map(String::len).max().unwrap();
        assert!(longest < 1024, "a warning of {longest} bytes");
    }

    #[test]
    fn the_shorthand_refuses_more_mounts_than_its_budget_and_long_paths() {
        let containers = MAX_SHORTHAND_MOUNTS / 2 + 1;
        let mut object = mk_deployment();
        let template = &mut object["spec"]["template"];
        template["metadata"]["annotations"] = json!({ANNOTATION_IMPORT: "a=/a,b=/b"});
        template["spec"]["containers"] = (0..containers)
            .map(|i| json!({"name": format!("c{i}"), "image": "x"}))
            .collect();
        let Err(Refusal::Invalid(refused)) = apply(object.clone(), SubpathPolicy::Deny) else {
            panic!("more mounts than the budget were added");
        };
        assert!(
            refused.contains(&format!("would add {} mounts", 2 * containers)),
            "{refused}"
        );
        // One container fewer fits.
        object["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .pop();
        apply(object, SubpathPolicy::Deny).unwrap();

        // Long paths in many containers: the bytes they add are bounded too.
        let mut object = mk_deployment();
        let path = format!("/{}", "p".repeat(999));
        object["spec"]["template"]["metadata"]["annotations"] =
            json!({ANNOTATION_IMPORT: format!("a={path}")});
        let containers = |n: usize| -> Value {
            (0..n)
                .map(|i| json!({"name": format!("c{i}"), "image": "x"}))
                .collect()
        };
        object["spec"]["template"]["spec"]["containers"] = containers(100);
        let Err(Refusal::Invalid(refused)) = apply(object.clone(), SubpathPolicy::Deny) else {
            panic!("100 KB of mount paths were added");
        };
        assert!(refused.contains("bytes of mount paths"), "{refused}");
        object["spec"]["template"]["spec"]["containers"] = containers(60);
        apply(object, SubpathPolicy::Deny).unwrap();

        let path = format!("/{}", "p".repeat(MAX_MOUNT_PATH_BYTES));
        let refused = parse_import_annotation(&format!("a={path}")).unwrap_err();
        assert!(refused.contains("longer than 1024 bytes"), "{refused}");
        assert!(refused.len() < 300, "{refused}");
    }

    #[rstest]
    #[case::deployment("Deployment")]
    #[case::statefulset("StatefulSet")]
    #[case::daemonset("DaemonSet")]
    #[case::job("Job")]
    #[case::cronjob("CronJob")]
    fn allow_subpath_on_a_workload_covers_the_pods_it_creates(#[case] kind: &str) {
        let mut template = mk_deployment()["spec"]["template"].clone();
        template["spec"]["containers"][0]["volumeMounts"][0]["subPath"] = json!("db-password");
        let annotations = json!({ANNOTATION_ALLOW_SUBPATH: "true"});
        let object = match kind {
            "CronJob" => {
                json!({"kind": kind, "metadata": {"name": "c", "annotations": annotations},
                "spec": {"jobTemplate": {"spec": {"template": template}}}})
            }
            _ => json!({"kind": kind, "metadata": {"name": "w", "annotations": annotations},
                "spec": {"template": template}}),
        };
        let (object, mutation) = apply(object, SubpathPolicy::Deny).unwrap();
        assert_eq!(mutation.warnings.len(), 1, "{kind}");
        let template = match kind {
            "CronJob" => object["spec"]["jobTemplate"]["spec"]["template"].clone(),
            _ => object["spec"]["template"].clone(),
        };
        assert_eq!(
            template["metadata"]["annotations"][ANNOTATION_ALLOW_SUBPATH_INHERITED], "true",
            "{kind}: the template carries it"
        );
        if kind == "CronJob" {
            // The Job the CronJob creates: the job template's metadata and spec.
            let job_template = &object["spec"]["jobTemplate"];
            let job = json!({"kind": "Job", "metadata": job_template["metadata"],
                "spec": job_template["spec"]});
            let (job, mutation) = apply(job, SubpathPolicy::Deny).expect("the Job is admitted");
            assert_eq!(mutation.warnings.len(), 1);
            assert_eq!(
                job["spec"]["template"]["metadata"]["annotations"]
                    [ANNOTATION_ALLOW_SUBPATH_INHERITED],
                "true",
                "its Pods are admitted too"
            );
        }
        // What the controller creates from the template: a Pod with the template's metadata.
        let mut pod =
            json!({"kind": "Pod", "spec": template["spec"], "metadata": template["metadata"]});
        pod["metadata"]["generateName"] = json!("w-");
        let (_, mutation) = apply(pod.clone(), SubpathPolicy::Deny).expect("the Pod is admitted");
        assert_eq!(mutation.warnings.len(), 1, "{kind}: with the warning");
        // Without the annotation the same Pod is still denied.
        pod["metadata"]["annotations"] = json!({});
        assert!(apply(pod, SubpathPolicy::Deny).is_err());
        // The workload's annotation removed, the template's copy goes with it.
        let mut object = object;
        object["metadata"]["annotations"] = json!({});
        assert!(
            apply(object.clone(), SubpathPolicy::Deny).is_err(),
            "{kind}: denied again"
        );
        let (object, _) = apply(object, SubpathPolicy::Warn).unwrap();
        let template = match kind {
            "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"],
            _ => &object["spec"]["template"],
        };
        assert!(
            template["metadata"]["annotations"]
                .get(ANNOTATION_ALLOW_SUBPATH_INHERITED)
                .is_none(),
            "{kind}: {template}"
        );
    }

    #[test]
    fn sub_path_mounts_of_other_volumes_are_untouched() {
        let mut object = mk_deployment();
        let spec = &mut object["spec"]["template"]["spec"];
        spec["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "config", "configMap": {"name": "c"}}));
        spec["containers"][0]["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "config", "mountPath": "/etc/app.ini", "subPath": "app.ini"}));
        let (object, mutation) = apply(object, SubpathPolicy::Deny).unwrap();
        assert!(mutation.warnings.is_empty());
        assert_eq!(
            object["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][1],
            json!({"name": "config", "mountPath": "/etc/app.ini", "subPath": "app.ini"})
        );
    }

    #[test]
    fn kubelets_volume_attributes_cannot_be_set_by_the_pod() {
        for key in [
            "csi.storage.k8s.io/serviceAccount.tokens",
            "csi.storage.k8s.io/pod.namespace",
        ] {
            let mut object = mk_deployment();
            object["spec"]["template"]["spec"]["volumes"][0]["csi"]["volumeAttributes"][key] =
                json!("forged");
            let Refusal::Forbidden(denial) = apply(object, SubpathPolicy::Deny).unwrap_err() else {
                panic!("a policy refusal")
            };
            assert!(
                denial.contains(key) && denial.contains("kubelet's to set"),
                "{denial}"
            );
        }
    }

    #[test]
    fn a_secrets_store_volume_without_an_ssi_is_denied() {
        let mut object = mk_deployment();
        object["spec"]["template"]["spec"]["volumes"][0]["csi"]["volumeAttributes"] = json!({});
        let Refusal::Invalid(denial) = apply(object, SubpathPolicy::Deny).unwrap_err() else {
            panic!("an object that cannot work as written")
        };
        assert!(
            denial.contains("volumeAttributes.secretsStoreImport")
                && denial.contains("\"secrets\""),
            "{denial}"
        );
    }

    #[test]
    fn the_shorthand_adds_volumes_and_read_only_mounts_to_app_containers() {
        let mut object = mk_deployment();
        let template = &mut object["spec"]["template"];
        template["spec"]["volumes"] = json!([]);
        template["spec"]["containers"][0]["volumeMounts"] = json!([]);
        template["spec"]["initContainers"] = json!([{"name": "init", "image": "x"}]);
        template["metadata"]["annotations"] =
            json!({ANNOTATION_IMPORT: "python-backend, tls=/etc/tls"});
        let (object, mutation) = apply(object, SubpathPolicy::Deny).unwrap();
        let spec = &object["spec"]["template"]["spec"];
        assert_eq!(
            spec["volumes"],
            json!([
                {"name": "secrets-store-python-backend", "csi": {"driver": DRIVER_NAME, "readOnly": true, "volumeAttributes": {"secretsStoreImport": "python-backend"}}},
                {"name": "secrets-store-tls", "csi": {"driver": DRIVER_NAME, "readOnly": true, "volumeAttributes": {"secretsStoreImport": "tls"}}}
            ])
        );
        assert_eq!(
            spec["containers"][0]["volumeMounts"],
            json!([
                {"name": "secrets-store-python-backend", "mountPath": "/mnt/secrets", "readOnly": true},
                {"name": "secrets-store-tls", "mountPath": "/etc/tls", "readOnly": true}
            ])
        );
        assert!(
            spec["initContainers"][0].get("volumeMounts").is_none(),
            "init containers are not app containers"
        );
        assert_eq!(mutation.imports, ["python-backend", "tls"]);
    }

    #[rstest]
    #[case("python-backend", true)]
    #[case("a=/x,b=/y", true)]
    #[case("", false)]
    #[case("Bad_Name", false)]
    #[case("a=relative", false)]
    #[case("a=/x,b=/x", false)]
    #[case("a=/x/../etc", false)]
    #[case::one_volume_name("app.db=/x,app-db=/y", false)]
    #[case::twice("app=/x,app=/y", false)]
    fn parses_the_import_annotation(#[case] text: &str, #[case] valid: bool) {
        assert_eq!(parse_import_annotation(text).is_ok(), valid, "{text}");
    }

    #[test]
    fn the_shorthand_never_mounts_someone_elses_volume_in_its_place() {
        let mut object = mk_deployment();
        let template = &mut object["spec"]["template"];
        template["metadata"]["annotations"] = json!({ANNOTATION_IMPORT: "cache"});
        template["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "secrets-store-cache", "emptyDir": {}}));
        let Err(Refusal::Invalid(message)) = mutate(&mut object, SubpathPolicy::Deny) else {
            panic!("refused")
        };
        assert!(
            message.contains("already has a volume named \"secrets-store-cache\""),
            "{message}"
        );
        let error = parse_import_annotation("app.db=/x,app-db=/y").unwrap_err();
        assert!(error.contains("would both be volume"), "{error}");
    }

    #[test]
    fn a_bad_shorthand_is_denied_with_the_syntax() {
        let mut object = mk_deployment();
        object["spec"]["template"]["metadata"]["annotations"] =
            json!({ANNOTATION_IMPORT: "Bad_Name"});
        let Refusal::Invalid(denial) = apply(object, SubpathPolicy::Deny).unwrap_err() else {
            panic!("an annotation that cannot be read")
        };
        assert!(
            denial.contains(ANNOTATION_IMPORT) && denial.contains("<ssi>=<path>"),
            "{denial}"
        );
    }

    #[test]
    fn objects_without_secrets_store_volumes_or_of_other_kinds_are_left_alone() {
        let mut plain = mk_deployment();
        plain["spec"]["template"]["spec"]["volumes"] = json!([{"name": "secrets", "emptyDir": {}}]);
        let (object, mutation) = apply(plain.clone(), SubpathPolicy::Deny).unwrap();
        assert_eq!(object, plain);
        assert!(mutation.imports.is_empty());
        let service = json!({"kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": []}});
        assert_eq!(
            apply(service.clone(), SubpathPolicy::Deny).unwrap().0,
            service
        );
    }

    #[test]
    fn objects_of_any_size_are_handled_in_one_pass_and_the_shorthand_is_bounded() {
        // 20,000 volumes, each mounted: comparing every mount with every volume would take
        // minutes; the sets make it one pass.
        let mut big = mk_deployment();
        let count = 20_000;
        let spec = &mut big["spec"]["template"]["spec"];
        spec["volumes"] = (0..count)
            .map(|i| {
                json!({"name": format!("v{i}"), "csi": {"driver": DRIVER_NAME,
                "volumeAttributes": {"secretsStoreImport": format!("ssi-{}", i % 10)}}})
            })
            .collect();
        spec["containers"][0]["volumeMounts"] = (0..count)
            .map(|i| json!({"name": format!("v{i}"), "mountPath": format!("/m/{i}")}))
            .collect();
        let mutation = mutate(&mut big, SubpathPolicy::Deny).unwrap();
        assert_eq!(mutation.imports.len(), 10, "each SSI once");
        let mounts = big["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap();
        assert!(mounts.iter().all(|m| m["readOnly"] == true));

        let names = |n: usize| {
            (0..n)
                .map(|i| format!("s{i}=/m/{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            parse_import_annotation(&names(MAX_SHORTHAND_IMPORTS))
                .unwrap()
                .len(),
            64
        );
        let refused = parse_import_annotation(&names(400_000)).unwrap_err();
        assert!(refused.contains("more than 64"), "{refused}");
    }
}
