//! Which objects are ours to review: the same rule twice, as CEL for the apiserver (the chart's
//! `matchConditions`, so that it calls the webhook for nothing else and an outage of the webhook
//! stops only what needs it) and as code for the webhook's own answers. A test on the real
//! apiserver checks that the two agree.
//!
//! The volume policy concerns an object that carries an annotation of ours, or whose pod
//! template does, or whose pod template has a volume of our driver. Injection concerns a Pod
//! annotated with a role or a reaction to its files (`on-file-change`).

use crate::annotations::PREFIX;
use serde_json::Value;
use ssi_core::DRIVER_NAME;

/// The chart's `matchConditions` of the volume policy's webhook: name and CEL expression.
pub const ENFORCE_CONDITION: (&str, &str) = (
    "uses-secrets-store",
    "(has(object.metadata) && has(object.metadata.annotations) \
     && object.metadata.annotations.exists(k, k.startsWith('secrets-store.deckhouse.io/'))) \
     || (has(object.spec) && has(object.spec.volumes) \
     && object.spec.volumes.exists(v, has(v.csi) && has(v.csi.driver) \
     && v.csi.driver == 'secrets-store.csi.deckhouse.io')) \
     || (has(object.spec) && has(object.spec.template) \
     && ((has(object.spec.template.metadata) && has(object.spec.template.metadata.annotations) \
     && object.spec.template.metadata.annotations.exists(k, k.startsWith('secrets-store.deckhouse.io/'))) \
     || (has(object.spec.template.spec) && has(object.spec.template.spec.volumes) \
     && object.spec.template.spec.volumes.exists(v, has(v.csi) && has(v.csi.driver) \
     && v.csi.driver == 'secrets-store.csi.deckhouse.io')))) \
     || (has(object.spec) && has(object.spec.jobTemplate) && has(object.spec.jobTemplate.spec) \
     && has(object.spec.jobTemplate.spec.template) \
     && ((has(object.spec.jobTemplate.spec.template.metadata) \
     && has(object.spec.jobTemplate.spec.template.metadata.annotations) \
     && object.spec.jobTemplate.spec.template.metadata.annotations.exists(k, k.startsWith('secrets-store.deckhouse.io/'))) \
     || (has(object.spec.jobTemplate.spec.template.spec) \
     && has(object.spec.jobTemplate.spec.template.spec.volumes) \
     && object.spec.jobTemplate.spec.template.spec.volumes.exists(v, has(v.csi) && has(v.csi.driver) \
     && v.csi.driver == 'secrets-store.csi.deckhouse.io'))))",
);

/// The chart's `matchConditions` of the injection webhook: name and CEL expression.
pub const INJECT_CONDITION: (&str, &str) = (
    "asks-for-injection",
    "has(object.metadata) && has(object.metadata.annotations) \
     && ('secrets-store.deckhouse.io/role' in object.metadata.annotations \
     || 'secrets-store.deckhouse.io/on-file-change' in object.metadata.annotations)",
);

/// Whether the volume policy concerns `object`: [`ENFORCE_CONDITION`] in code.
pub fn enforce_concerns(object: &Value) -> bool {
    let annotated = |holder: &Value| {
        holder["metadata"]["annotations"]
            .as_object()
            .is_some_and(|annotations| annotations.keys().any(|k| k.starts_with(PREFIX)))
    };
    let our_volume = |holder: &Value| {
        holder["spec"]["volumes"].as_array().is_some_and(|volumes| {
            volumes
                .iter()
                .any(|volume| volume["csi"]["driver"].as_str() == Some(DRIVER_NAME))
        })
    };
    let spec = &object["spec"];
    annotated(object)
        || our_volume(object)
        || [&spec["template"], &spec["jobTemplate"]["spec"]["template"]]
            .into_iter()
            .any(|template| annotated(template) || our_volume(template))
}

/// Whether injection concerns `object`: [`INJECT_CONDITION`] in code.
pub fn inject_concerns(object: &Value) -> bool {
    object["metadata"]["annotations"]
        .as_object()
        .is_some_and(|annotations| {
            ["role", "on-file-change"]
                .iter()
                .any(|name| annotations.contains_key(&format!("{PREFIX}{name}")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_with_our_volumes_or_annotations_concern_the_policy_and_others_do_not() {
        let ours = json!({"name": "s", "csi": {"driver": DRIVER_NAME}});
        let other = json!({"name": "o", "csi": {"driver": "other.csi.example"}});
        let template = |volume: &Value, annotations: Value| json!({"metadata": {"annotations": annotations}, "spec": {"volumes": [volume]}});
        for (object, concerns) in [
            (json!({"kind": "Pod", "spec": {"volumes": [ours]}}), true),
            (json!({"kind": "Pod", "spec": {"volumes": [other]}}), false),
            (json!({"kind": "Pod", "spec": {"containers": []}}), false),
            (
                json!({"kind": "Pod", "metadata": {"annotations": {"secrets-store.deckhouse.io/import": "app"}}}),
                true,
            ),
            (
                json!({"kind": "Pod", "metadata": {"annotations": {"secrets-store.deckhouse.io.example/x": "y"}}}),
                false,
            ),
            (
                json!({"kind": "Deployment", "spec": {"template": template(&ours, json!({}))}}),
                true,
            ),
            (
                json!({"kind": "Deployment", "spec": {"template": template(&other, json!({"secrets-store.deckhouse.io/import": "app"}))}}),
                true,
            ),
            (
                json!({"kind": "Deployment", "spec": {"template": template(&other, json!({"app": "x"}))}}),
                false,
            ),
            (
                json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template(&ours, json!({}))}}}}),
                true,
            ),
            (
                json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template(&other, json!({}))}}}}),
                false,
            ),
            (json!("not an object"), false),
        ] {
            assert_eq!(enforce_concerns(&object), concerns, "{object}");
        }
        assert!(inject_concerns(
            &json!({"metadata": {"annotations": {"secrets-store.deckhouse.io/role": "r"}}})
        ));
        assert!(!inject_concerns(
            &json!({"metadata": {"annotations": {"secrets-store.deckhouse.io/import": "r"}}})
        ));
    }
}
