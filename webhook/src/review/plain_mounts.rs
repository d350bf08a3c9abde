//! The volume policy's common case, read without a tree: a Pod, or a workload's pod template,
//! that mounts secrets-store volumes and gives the policy nothing to refuse, warn about or add
//! (no annotation of ours, every volume naming its SSI, no subPath mount), in a body of at most
//! 16 KiB. Its patch only sets `readOnly`, so it is written as the object is read: strings
//! borrowed from the body, no `Value` tree, no `mutate`, no patch objects (the guide's Deployment:
//! criterion 5.6 -> 3.6 us, docs/benchmarks.md).
//!
//! Anything else, and anything this reader is not sure of (a type it does not expect, a key
//! given twice, an array where an object belongs), gives `None`, and the tree path decides. The
//! tree path's answers are the reference: `tests::the_plain_path_answers_as_the_tree_path_does`
//! compares the two, answer for answer, over objects that take this path and objects that must
//! not. What it skips it checks only to be JSON, as serde does, while the tree path builds the
//! volumes and mounts whole: a volume or mount field nested more than 128 levels deep, or a lone
//! UTF-16 surrogate escape in one, is refused there and not here. No apiserver sends either (it
//! decodes objects into their types before admission), and such a body creates nothing.

use super::{Response, Reviewed, Verdict, read_request};
use crate::annotations::PREFIX;
use crate::metrics::kind_label;
use crate::shape::BorrowedStr;
use memchr::memmem;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use ssi_core::{ATTR_SECRETS_STORE_IMPORT, DRIVER_NAME};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::LazyLock;

/// The largest body the plain path reads (see [`review`]); larger ones take the tree path.
const PLAIN_BODY_LIMIT: usize = 16 * 1024;

/// The review of `body` when it is the common case (see the module), or `None`.
pub(super) fn review(body: &[u8]) -> Option<Reviewed> {
    // Every JSON value takes at least two bytes of text (itself and a comma), so no body of this
    // size holds more values than the tree path may build: both paths refuse the same objects.
    // And an object carrying an annotation of ours is the tree path's: it is not parsed twice.
    const _: () = assert!(PLAIN_BODY_LIMIT <= 2 * crate::shape::MAX_VALUES);
    static ANNOTATION: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(PREFIX.trim_end_matches('/')));
    if body.len() > PLAIN_BODY_LIMIT || ANNOTATION.find(body).is_some() {
        return None;
    }
    let request = read_request::<Obj<Object>>(body).ok()?;
    let kind = &*request.kind.kind;
    // Where the pod spec is, for the kinds and operations the tree path mutates (CronJobs,
    // whose job template carries a copy of our annotation, take the tree path).
    let at = match (kind, &*request.operation) {
        ("Pod", "CREATE") => "",
        (
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job",
            "CREATE" | "UPDATE",
        ) => "/spec/template",
        _ => return None,
    };
    let object = request.object?.0;
    let spec = object.spec?.0;
    // A pod template where the kind has none (or the reverse) is the tree path's to judge: the
    // apiserver's matchConditions look at both places.
    if object.metadata.is_some_and(|m| m.0.ours.0) || spec.job_template.is_some() {
        return None;
    }
    let pod = if at.is_empty() {
        if spec.template.is_some() {
            return None;
        }
        spec
    } else {
        if spec.has_pod_parts() {
            return None;
        }
        let template = spec.template?.0;
        if template.metadata.is_some_and(|m| m.0.ours.0) {
            return None;
        }
        let pod = template.spec?.0;
        if pod.template.is_some() || pod.job_template.is_some() {
            return None;
        }
        pod
    };

    let mut patch = String::new();
    let mut add_read_only = |path: std::fmt::Arguments| {
        patch.push(if patch.is_empty() { '[' } else { ',' });
        // Keys of the Pod API and indexes: nothing in the path needs escaping.
        let _ = write!(
            patch,
            r#"{{"op":"add","path":"{at}/spec/{path}/readOnly","value":true}}"#
        );
    };
    // Sets, as the tree path has them: an object may list any number of volumes and mounts.
    let mut ours = HashSet::new();
    let mut imported = HashSet::new();
    let mut imports = Vec::new();
    for (index, volume) in pod.volumes.iter().flatten().enumerate() {
        let Some(Obj(csi)) = &volume.0.csi else {
            continue;
        };
        if csi.driver.as_ref().map(|d| &*d.0) != Some(DRIVER_NAME) {
            continue;
        }
        // A volume that lacks its name or SSI, or sets kubelet's keys, is refused by the tree path.
        let name = volume.0.name.as_ref()?;
        let attributes = csi.attributes.as_ref()?;
        let ssi = attributes.ssi.as_ref().filter(|ssi| !ssi.is_empty())?;
        if attributes.kubelets {
            return None;
        }
        if !is_true(&csi.read_only) {
            add_read_only(format_args!("volumes/{index}/csi"));
        }
        if imported.insert(&**ssi) {
            imports.push(ssi.to_string());
        }
        ours.insert(&*name.0);
    }
    // Not ours to change (only the marker's text matched): the tree path says so.
    if ours.is_empty() {
        return None;
    }
    for (list, containers) in [
        ("initContainers", &pod.init_containers),
        ("containers", &pod.containers),
        ("ephemeralContainers", &pod.ephemeral_containers),
    ] {
        for (container, mounts) in containers.iter().flatten().enumerate() {
            for (index, mount) in mounts.0.volume_mounts.iter().flatten().enumerate() {
                let mount = &mount.0;
                if !mount.name.as_ref().is_some_and(|n| ours.contains(&*n.0)) {
                    continue;
                }
                // A subPath mount is refused or warned about: the tree path words that.
                let set =
                    |path: &Option<BorrowedStr>| path.as_ref().is_some_and(|p| !p.0.is_empty());
                if set(&mount.sub_path) || set(&mount.sub_path_expr) {
                    return None;
                }
                if !is_true(&mount.read_only) {
                    add_read_only(format_args!("{list}/{container}/volumeMounts/{index}"));
                }
            }
        }
    }

    let mut response = Response::allow(request.uid.into_owned());
    let verdict = if patch.is_empty() {
        Verdict::Unchanged
    } else {
        patch.push(']');
        response.patch = Some(patch.into_bytes());
        response.patch_type = Some("JSONPatch");
        Verdict::Patched
    };
    let namespace = request
        .namespace
        .map(|n| n.into_owned())
        .unwrap_or_default();
    Some(Reviewed {
        response,
        imports: Some((namespace, imports)),
        verdict,
        kind: kind_label(kind),
        lookup: None,
    })
}

fn is_true(value: &Option<ReadOnly>) -> bool {
    matches!(value, Some(ReadOnly(true)))
}

/// An AdmissionReview's object, or a pod template, as far as this path reads it.
#[derive(Deserialize)]
struct Object<'a> {
    #[serde(default)]
    metadata: Option<Obj<Metadata>>,
    #[serde(default, borrow)]
    spec: Option<Obj<Spec<'a>>>,
}

/// Of an object's or a template's metadata, whether an annotation is ours.
#[derive(Deserialize)]
struct Metadata {
    #[serde(default, rename = "annotations")]
    ours: AnyOfOurs,
}

/// Whether a map's keys include one of our annotations (the values are skipped).
#[derive(Default)]
struct AnyOfOurs(bool);

impl<'de> Deserialize<'de> for AnyOfOurs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = AnyOfOurs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("annotations")
            }
            fn visit_unit<E>(self) -> Result<AnyOfOurs, E> {
                Ok(AnyOfOurs(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyOfOurs, A::Error> {
                let mut ours = false;
                while let Some(BorrowedStr(key)) = map.next_key()? {
                    ours |= key.starts_with(PREFIX);
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(AnyOfOurs(ours))
            }
        }
        deserializer.deserialize_any(Keys)
    }
}

/// A pod spec, or an object's spec holding a pod template: the fields of both, so that one in
/// the other's place is seen.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec<'a> {
    #[serde(default, borrow)]
    template: Option<Box<Obj<Object<'a>>>>,
    #[serde(default)]
    job_template: Option<IgnoredAny>,
    #[serde(default, borrow)]
    volumes: Option<Vec<Obj<Volume<'a>>>>,
    #[serde(default, borrow)]
    init_containers: Option<Vec<Obj<Container<'a>>>>,
    #[serde(default, borrow)]
    containers: Option<Vec<Obj<Container<'a>>>>,
    #[serde(default, borrow)]
    ephemeral_containers: Option<Vec<Obj<Container<'a>>>>,
}

impl Spec<'_> {
    /// Whether it has any part of a pod spec the policy reads.
    fn has_pod_parts(&self) -> bool {
        self.volumes.is_some()
            || self.init_containers.is_some()
            || self.containers.is_some()
            || self.ephemeral_containers.is_some()
    }
}

#[derive(Deserialize)]
struct Volume<'a> {
    #[serde(default, borrow)]
    name: Option<BorrowedStr<'a>>,
    #[serde(default, borrow)]
    csi: Option<Obj<Csi<'a>>>,
}

#[derive(Deserialize)]
struct Csi<'a> {
    #[serde(default, borrow)]
    driver: Option<BorrowedStr<'a>>,
    #[serde(default, borrow, rename = "volumeAttributes")]
    attributes: Option<Attributes<'a>>,
    #[serde(default, rename = "readOnly")]
    read_only: Option<ReadOnly>,
}

/// Of a CSI volume's attributes, the SSI it names and whether it sets a key of kubelet's.
struct Attributes<'a> {
    ssi: Option<std::borrow::Cow<'a, str>>,
    kubelets: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Attributes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<'a>(std::marker::PhantomData<&'a str>);
        impl<'de: 'a, 'a> Visitor<'de> for Entries<'a> {
            type Value = Attributes<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("volume attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes<'a>, A::Error> {
                let mut attributes = Attributes {
                    ssi: None,
                    kubelets: false,
                };
                while let Some(BorrowedStr(key)) = map.next_key()? {
                    attributes.kubelets |= key.starts_with("csi.storage.k8s.io/");
                    if key == ATTR_SECRETS_STORE_IMPORT {
                        // As the tree reads it: the last of repeated keys.
                        attributes.ssi = Some(map.next_value::<BorrowedStr>()?.0);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(attributes)
            }
        }
        deserializer.deserialize_map(Entries(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container<'a> {
    #[serde(default, borrow)]
    volume_mounts: Option<Vec<Obj<Mount<'a>>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mount<'a> {
    #[serde(default, borrow)]
    name: Option<BorrowedStr<'a>>,
    #[serde(default, borrow)]
    sub_path: Option<BorrowedStr<'a>>,
    #[serde(default, borrow)]
    sub_path_expr: Option<BorrowedStr<'a>>,
    #[serde(default)]
    read_only: Option<ReadOnly>,
}

/// A struct read from a JSON object only: serde's derived structs also read an array, field by
/// field in order, which the tree path reads as no object at all.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Members<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        deserializer.deserialize_map(Members(std::marker::PhantomData))
    }
}

/// Whether a `readOnly` is the JSON `true`, which the tree path leaves alone (any other scalar
/// gets the patch). An array or an object is not read: the tree path judges it.
struct ReadOnly(bool);

impl<'de> Deserialize<'de> for ReadOnly {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Scalar;
        impl<'de> Visitor<'de> for Scalar {
            type Value = ReadOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_bool<E>(self, v: bool) -> Result<ReadOnly, E> {
                Ok(ReadOnly(v))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ReadOnly, E> {
                Ok(ReadOnly(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ReadOnly, E> {
                Ok(ReadOnly(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ReadOnly, E> {
                Ok(ReadOnly(false))
            }
            fn visit_str<E>(self, _: &str) -> Result<ReadOnly, E> {
                Ok(ReadOnly(false))
            }
        }
        deserializer.deserialize_any(Scalar)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Policy, review_tree};
    use crate::mutate::SubpathPolicy;
    use crate::registry::Entrypoints;
    use serde_json::{Value, json};

    fn as_review(kind: &str, operation: &str, object: &Value) -> String {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": kind},
                           "operation": operation, "namespace": "ns", "object": object,
                           "oldObject": null}})
        .to_string()
    }

    /// Whether `body` took the plain path; if it did, its answer is the tree path's under either
    /// subPath policy, to the byte.
    fn answers_alike(body: &str) -> bool {
        let Some(plain) = super::review(body.as_bytes()) else {
            return false;
        };
        for subpath in [SubpathPolicy::Deny, SubpathPolicy::Warn] {
            let tree = review_tree(body.as_bytes(), &Policy::from(subpath), &Entrypoints::new());
            assert_eq!(
                String::from_utf8_lossy(&plain.response.to_review_json()),
                String::from_utf8_lossy(&tree.response.to_review_json()),
                "{body}"
            );
            assert_eq!(plain.verdict, tree.verdict, "{body}");
            assert_eq!(plain.imports, tree.imports, "{body}");
            assert_eq!(plain.kind, tree.kind, "{body}");
            assert!(tree.lookup.is_none());
        }
        true
    }

    fn ours(name: &str, ssi: Value, more: Value) -> Value {
        let mut csi = json!({"driver": "secrets-store.csi.deckhouse.io",
                             "volumeAttributes": {"secretsStoreImport": ssi}});
        for (key, value) in more.as_object().into_iter().flatten() {
            csi[key] = value.clone();
        }
        json!({"name": name, "csi": csi})
    }

    #[test]
    fn the_plain_path_answers_as_the_tree_path_does() {
        let volume_lists = [
            json!([ours("secrets", json!("a"), json!({}))]),
            json!([ours("secrets", json!("a"), json!({"readOnly": true}))]),
            json!([ours("secrets", json!("a"), json!({"readOnly": false}))]),
            json!([ours("secrets", json!("a"), json!({"readOnly": "true"}))]),
            json!([ours("secrets", json!("a"), json!({"readOnly": null}))]),
            json!([{"name": "data", "csi": {"driver": "other.csi.example.com", "volumeAttributes": {"x": 1}}},
                   ours("secrets", json!("a"), json!({}))]),
            json!([
                ours("secrets", json!("a"), json!({})),
                ours("b", json!("a"), json!({})),
                ours("c", json!("c"), json!({"readOnly": true}))
            ]),
            json!([{"name": "secrets", "csi": {"driver": "secrets-store.csi.deckhouse.io"}}]),
            json!([ours("secrets", json!(""), json!({}))]),
            json!([ours("secrets", json!(7), json!({}))]),
            json!([{"name": "secrets", "csi": {"driver": "secrets-store.csi.deckhouse.io",
                    "volumeAttributes": {"secretsStoreImport": "a", "csi.storage.k8s.io/pod.name": "p"}}}]),
            json!([{"csi": {"driver": "secrets-store.csi.deckhouse.io", "volumeAttributes": {"secretsStoreImport": "a"}}}]),
            json!([{"name": "secrets", "emptyDir": {}}]),
            json!([ours("se\"crets", json!("a\nb"), json!({}))]),
            json!([ours("secrets", json!("a"), json!({})), "not a volume"]),
            json!("not a list"),
            Value::Null,
        ];
        let mount_lists = [
            json!([{"name": "secrets", "mountPath": "/mnt/secrets"}]),
            json!([{"name": "secrets", "mountPath": "/mnt/secrets", "readOnly": true}]),
            json!([{"name": "secrets", "mountPath": "/mnt/secrets", "readOnly": "yes"}]),
            json!([{"name": "secrets", "subPath": "x"}]),
            json!([{"name": "secrets", "subPath": ""}]),
            json!([{"name": "secrets", "subPathExpr": "$(X)"}]),
            json!([{"name": "secrets", "subPath": 5}]),
            json!([{"name": "data"}, {"name": "b"}, {"name": "secrets"}]),
            json!([{"name": 5}]),
            json!([{"name": "se\"crets"}]),
            json!([]),
            Value::Null,
        ];
        let annotations = [
            None,
            Some(json!({"team": "a"})),
            Some(json!({"secrets-store.deckhouse.io/allow-subpath": "true"})),
            Some(json!({"secrets-store.deckhouse.io/import": "x"})),
            Some(Value::Null),
        ];
        let (mut plain, mut tree) = (0, 0);
        let mut count = |body: String| {
            if answers_alike(&body) {
                plain += 1;
            } else {
                tree += 1;
            }
        };
        for volumes in &volume_lists {
            for mounts in &mount_lists {
                let spec = |lists: &[&str]| {
                    let mut spec = json!({"volumes": volumes});
                    for list in lists {
                        spec[*list] = json!([{"name": "app", "image": "a"},
                                             {"name": "app2", "volumeMounts": mounts}]);
                    }
                    spec
                };
                for lists in [
                    &["containers"][..],
                    &["initContainers", "containers", "ephemeralContainers"],
                ] {
                    for annotation in &annotations {
                        let metadata = |a: &Option<Value>| match a {
                            Some(a) => json!({"name": "o", "annotations": a}),
                            None => json!({"name": "o"}),
                        };
                        let pod = json!({"kind": "Pod", "metadata": metadata(annotation), "spec": spec(lists)});
                        for operation in ["CREATE", "UPDATE"] {
                            count(as_review("Pod", operation, &pod));
                        }
                        let template =
                            json!({"metadata": metadata(annotation), "spec": spec(lists)});
                        for kind in ["Deployment", "StatefulSet", "CronJob", "Gadget"] {
                            for (operation, object) in [
                                (
                                    "CREATE",
                                    json!({"metadata": metadata(&None), "spec": {"template": template}}),
                                ),
                                (
                                    "UPDATE",
                                    json!({"metadata": metadata(annotation), "spec": {"replicas": 1, "template": template}}),
                                ),
                                (
                                    "DELETE",
                                    json!({"metadata": metadata(&None), "spec": {"template": template}}),
                                ),
                            ] {
                                count(as_review(kind, operation, &object));
                            }
                        }
                    }
                }
            }
        }
        // Both paths are taken, often: neither side of the comparison is empty.
        assert!(plain > 1_000 && tree > 1_000, "plain {plain}, tree {tree}");

        // What a generated object cannot hold: keys given twice, escapes, misplaced parts.
        let guide = include_str!("../../tests/fixtures/deployment-create.json");
        assert!(
            answers_alike(guide),
            "the guide's Deployment takes the plain path"
        );
        let driver = r#""driver": "secrets-store.csi.deckhouse.io""#;
        for (from, to) in [
            (
                driver,
                &*format!(r#"{driver}, "driver": "other.csi.example.com""#),
            ),
            (
                driver,
                &*format!(r#""driver": "other.csi.example.com", {driver}"#),
            ),
            (
                r#""secretsStoreImport": "python-backend""#,
                r#""secretsStoreImport": "x", "secretsStoreImport": "python-backend""#,
            ),
            (
                r#""secretsStoreImport": "python-backend""#,
                r#""secretsStoreImport": "python-backend", "secretsStoreImport": """#,
            ),
            (
                r#""mountPath": "/mnt/secrets""#,
                r#""mountPath": "/mnt/secrets", "readOnly": true, "readOnly": false"#,
            ),
            (
                r#""mountPath": "/mnt/secrets""#,
                r#""mountPath": "/mnt/secrets", "subPath": "", "subPath": "k""#,
            ),
            (
                r#""labels": {"#,
                r#""annotations": {"secrets-store.deckhouse.io\/allow-subpath": "true"}, "labels": {"#,
            ),
            (
                r#""labels": {"#,
                r#""annotations": {"secrets-store.deckhouse.io\u002fimport": "x"}, "labels": {"#,
            ),
            (r#""name": "secrets","#, r#""name": "sec\u0072ets","#),
            (
                r#""serviceAccountName""#,
                r#""volumes": [], "serviceAccountName""#,
            ),
            (
                r#""serviceAccountName""#,
                r#""template": {}, "serviceAccountName""#,
            ),
            (r#""selector""#, r#""jobTemplate": {}, "selector""#),
            (r#""selector""#, r#""volumes": [], "selector""#),
            (
                r#""spec": {
    "selector""#,
                r#""spec": [null, null, null], "x": {
    "selector""#,
            ),
            (
                r#""name": "secrets",
        "csi": {"#,
                r#""name": "secrets",
        "csi": {
         "readOnly": [[[[true]]]],"#,
            ),
            (
                r#""kind": "Deployment"
  },"#,
                r#""kind": "Pod"
  },"#,
            ),
        ] {
            assert!(guide.contains(from), "{from}");
            answers_alike(&guide.replacen(from, to, 1));
        }
    }

    #[test]
    fn objects_beyond_the_trees_value_budget_are_refused_on_both_paths() {
        // Small values, each below what the tree path counts: more of them than it may build.
        let mut volumes = vec![json!({"name": "v", "emptyDir": {}}); 3_000];
        volumes.push(ours("secrets", json!("a"), json!({})));
        let pod = json!({"kind": "Pod", "metadata": {"name": "p"},
                         "spec": {"volumes": volumes,
                                  "containers": [{"name": "a", "volumeMounts": [{"name": "secrets"}]}]}});
        let body = as_review("Pod", "CREATE", &pod);
        assert!(super::review(body.as_bytes()).is_none());
        let reviewed = super::super::review(
            body.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        let message = reviewed.response.message().unwrap_or_default();
        assert!(message.contains(crate::shape::OVER_BUDGET), "{message}");
    }
}
