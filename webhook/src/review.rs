//! AdmissionReview in, AdmissionReview out: decoding, the mutation, the JSON patch.
//!
//! Whatever arrives, the answer is a valid AdmissionReview carrying the request's uid (as far as
//! it can be read): undecodable input is `invalid`, a policy violation is a denial a person can
//! act on, and nothing from the object (env values included) is echoed back.

use crate::mutate::{Mutation, SubpathPolicy, mutate};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

/// The decided response, and what the caller may still check asynchronously (the SSIs).
#[derive(Debug)]
pub struct Reviewed {
    pub response: AdmissionResponse,
    /// Namespace and SSI names the admitted object references, for the existence warning.
    pub imports: Option<(String, Vec<String>)>,
    pub verdict: Verdict,
    /// The request's object kind ("" when the review could not be read).
    pub kind: String,
}

/// What became of a review, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Allowed as it was (not ours to change, or nothing to change).
    Unchanged,
    Patched,
    Denied,
    /// Not a review we could read.
    Invalid,
}

pub fn review(body: &[u8], policy: SubpathPolicy) -> Reviewed {
    let invalid = |reason: String| {
        let mut response = AdmissionResponse::invalid(reason);
        response.uid = uid_of(body).unwrap_or_default();
        Reviewed {
            response,
            imports: None,
            verdict: Verdict::Invalid,
            kind: String::new(),
        }
    };
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => return invalid(format!("the body is not an AdmissionReview: {e}")),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return invalid("the AdmissionReview carries no request".into()),
    };
    let response = AdmissionResponse::from(&request);
    let kind = request.kind.kind.clone();
    let relevant = match (request.kind.kind.as_str(), &request.operation) {
        ("Pod", Operation::Create) => true,
        ("Pod", _) => false,
        (_, Operation::Create | Operation::Update) => true,
        _ => false,
    };
    let Some(object) = request.object.as_ref().filter(|_| relevant) else {
        return Reviewed {
            response,
            imports: None,
            verdict: Verdict::Unchanged,
            kind,
        };
    };
    let mut original = match serde_json::to_value(object) {
        Ok(value) => value,
        Err(e) => return invalid(format!("the object cannot be read: {e}")),
    };
    // NB: the apiserver sends the object with its kind, but the request's kind is authoritative.
    if let Some(map) = original.as_object_mut() {
        map.insert("kind".into(), Value::String(kind.clone()));
    }
    let mut mutated = original.clone();
    match mutate(&mut mutated, policy) {
        Err(denial) => Reviewed {
            response: response.deny(denial),
            imports: None,
            verdict: Verdict::Denied,
            kind,
        },
        Ok(Mutation { warnings, imports }) => {
            let patch = json_patch::diff(&original, &mutated);
            let (mut response, verdict) = if patch.0.is_empty() {
                (response, Verdict::Unchanged)
            } else {
                match response.clone().with_patch(patch) {
                    Ok(patched) => (patched, Verdict::Patched),
                    Err(e) => return invalid(format!("failed to serialise the patch: {e}")),
                }
            };
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            let namespace = request.namespace.clone().unwrap_or_default();
            let imports = (!imports.is_empty()).then_some((namespace, imports));
            Reviewed {
                response,
                imports,
                verdict,
                kind,
            }
        }
    }
}

/// The request uid of a body that is JSON but not a valid AdmissionReview.
fn uid_of(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.pointer("/request/uid")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPLOYMENT: &str = include_str!("../tests/fixtures/deployment-create.json");
    const SUBPATH_POD: &str = include_str!("../tests/fixtures/pod-subpath-create.json");

    fn patched_object(fixture: &str, reviewed: &Reviewed) -> Value {
        let request: Value = serde_json::from_str(fixture).unwrap();
        let mut object = request["request"]["object"].clone();
        let patch: json_patch::Patch =
            serde_json::from_slice(reviewed.response.patch.as_ref().unwrap()).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
        object
    }

    #[test]
    fn the_guides_deployment_is_allowed_with_a_read_only_patch() {
        let reviewed = review(DEPLOYMENT.as_bytes(), SubpathPolicy::Deny);
        assert!(reviewed.response.allowed);
        assert_eq!(reviewed.verdict, Verdict::Patched);
        assert_eq!(
            reviewed.response.uid,
            "0c9f5a3e-7d1b-4e55-9a43-6f2c8e1d0a01"
        );
        let object = patched_object(DEPLOYMENT, &reviewed);
        assert_eq!(
            object["spec"]["template"]["spec"]["volumes"][0]["csi"]["readOnly"],
            true
        );
        assert_eq!(
            object["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["readOnly"],
            true
        );
        assert_eq!(
            reviewed.imports,
            Some(("my-namespace1".into(), vec!["python-backend".into()]))
        );
        let text = serde_json::to_string(&reviewed.response.into_review()).unwrap();
        assert!(text.contains("\"patchType\":\"JSONPatch\""), "{text}");
    }

    #[test]
    fn the_guides_subpath_example_is_denied_without_echoing_the_pod() {
        let reviewed = review(SUBPATH_POD.as_bytes(), SubpathPolicy::Deny);
        assert!(!reviewed.response.allowed);
        assert_eq!(reviewed.verdict, Verdict::Denied);
        assert_eq!(
            reviewed.response.uid,
            "5b7e2c10-1111-4c2d-8e3f-aa00bb11cc22"
        );
        let message = &reviewed.response.result.message;
        assert!(
            message.contains("Pod backend-5d8f7c-") && message.contains("/app/settings.ini"),
            "{message}"
        );
        let text = serde_json::to_string(&reviewed.response.into_review()).unwrap();
        assert!(
            !text.contains("plain-value-in-spec"),
            "an env value leaked: {text}"
        );
    }

    #[test]
    fn with_the_warn_policy_the_subpath_pod_passes_with_a_warning() {
        let reviewed = review(SUBPATH_POD.as_bytes(), SubpathPolicy::Warn);
        assert!(reviewed.response.allowed);
        assert_eq!(reviewed.response.warnings.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn undecodable_input_is_invalid_and_keeps_the_uid_when_readable() {
        let garbage = review(b"not json", SubpathPolicy::Deny);
        assert!(!garbage.response.allowed);
        assert_eq!(garbage.verdict, Verdict::Invalid);
        let partial = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                             "request": {"uid": "u-1", "kind": "broken"}});
        let reviewed = review(partial.to_string().as_bytes(), SubpathPolicy::Deny);
        assert!(!reviewed.response.allowed);
        assert_eq!(reviewed.response.uid, "u-1");
        let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
        assert!(
            !review(no_request.to_string().as_bytes(), SubpathPolicy::Deny)
                .response
                .allowed
        );
    }

    #[test]
    fn pod_updates_and_deletes_are_allowed_untouched() {
        let mut request: Value = serde_json::from_str(SUBPATH_POD).unwrap();
        request["request"]["operation"] = json!("UPDATE");
        let reviewed = review(request.to_string().as_bytes(), SubpathPolicy::Deny);
        assert!(reviewed.response.allowed);
        assert!(reviewed.response.patch.is_none());
    }

    #[test]
    fn reviewing_the_patched_object_yields_no_patch() {
        let first = review(DEPLOYMENT.as_bytes(), SubpathPolicy::Deny);
        let mut request: Value = serde_json::from_str(DEPLOYMENT).unwrap();
        request["request"]["object"] = patched_object(DEPLOYMENT, &first);
        let second = review(request.to_string().as_bytes(), SubpathPolicy::Deny);
        assert!(second.response.allowed);
        assert!(
            second.response.patch.is_none(),
            "reinvocation must be a no-op"
        );
        assert_eq!(second.verdict, Verdict::Unchanged);
    }
}
