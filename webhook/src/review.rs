//! AdmissionReview in, AdmissionReview out: decoding, the mutation, the JSON patch.
//!
//! Whatever arrives, the answer is a valid AdmissionReview carrying the request's uid (as far as
//! it can be read): undecodable input is `invalid`, a policy violation is a denial a person can
//! act on, and nothing from the object (env values included) is echoed back.

use crate::inject::{Injection, InjectorSettings, inject};
use crate::metrics::kind_label;
use crate::mutate::{Mutation, READ_BY_MUTATE, SubpathPolicy, mutate};
use crate::refusal::Refusal;
use crate::registry::{Entrypoints, LookupRequest};
use crate::shape::{Pruned, Shape, with_value_budget};
use base64::Engine;
use json_patch::{Patch, PatchOperation};
use jsonptr::{Pointer, PointerBuf, Token};
use memchr::memmem;
use serde::de::{DeserializeSeed, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::LazyLock;

mod plain_mounts;

const API_VERSION: &str = "admission.k8s.io/v1";

/// What the webhook enforces and adds, from its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// What to do with `subPath` mounts of secrets-store volumes.
    pub subpath: SubpathPolicy,
    /// Env injection into Pods; `None` leaves annotated Pods alone.
    pub injector: Option<InjectorSettings>,
    /// The secrets-store volume policy (read-only, subPath, attributes, the import shorthand);
    /// off for the injection-only endpoint, whose webhook objects may opt out of.
    pub enforce: bool,
}

impl From<SubpathPolicy> for Policy {
    fn from(subpath: SubpathPolicy) -> Policy {
        Policy {
            subpath,
            injector: None,
            enforce: true,
        }
    }
}

/// The decided response, and what the caller may still check asynchronously (the SSIs).
#[derive(Debug)]
pub struct Reviewed {
    /// The answer to send back.
    pub response: Response,
    /// Namespace and SSI names the admitted object references, for the existence warning.
    pub imports: Option<(String, Vec<String>)>,
    /// What became of the review, for metrics.
    pub verdict: Verdict,
    /// The request's object kind as a metrics label ([`kind_label`]; "other" when the review
    /// could not be read).
    pub kind: &'static str,
    /// Images to look up before the Pod can be decided; then review again with the answers.
    pub lookup: Option<LookupRequest>,
}

/// What became of a review, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Allowed as it was (not ours to change, or nothing to change).
    Unchanged,
    /// Allowed with a patch.
    Patched,
    /// Readable, but refused as against the policy (403).
    Denied,
    /// Not a review we could read.
    Invalid,
}

/// The parts of an AdmissionReview v1 request the webhook reads. Typed kube structs would parse
/// and re-serialise the whole object (metadata included) on every review; the object is only
/// ever needed as JSON, and only when it may concern us (`O` is then a `Value`, otherwise
/// `IgnoredAny`, so that the body is read once either way). Strings borrow from the body
/// unless they hold an escape.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IncomingReview<'a, O> {
    #[serde(borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<IncomingRequest<'a, O>>,
}

#[derive(Deserialize)]
struct IncomingRequest<'a, O> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: RequestKind<'a>,
    #[serde(borrow)]
    operation: Cow<'a, str>,
    #[serde(default, borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(default = "Option::default")]
    object: Option<O>,
}

#[derive(Deserialize)]
struct RequestKind<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

/// An AdmissionReview v1 response.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// The request's uid, which the apiserver matches the answer by.
    pub uid: String,
    /// Whether the object is admitted.
    pub allowed: bool,
    /// Why the request was refused; `None` when allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `JSONPatch` when there is a patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// The JSON patch, base64 in the wire format.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_base64")]
    pub patch: Option<Vec<u8>>,
    /// Shown to the user by kubectl: risky but legal specs, missing SSIs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Why a request was refused (a metav1.Status); the apiserver shows `message` to the user.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Always `Failure`.
    pub status: &'static str,
    /// 400 for an unreadable object, 403 for a policy refusal.
    pub code: u16,
    /// `BadRequest` or `Forbidden`.
    pub reason: &'static str,
    /// What to fix, for the person who sent the object.
    pub message: String,
}

fn as_base64<S: serde::Serializer>(
    patch: &Option<Vec<u8>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::Error;
    // Base64 never needs escaping: written as a raw JSON string, which is checked at word
    // speed, rather than scanned byte by byte for escapes (a tenth of a review's CPU).
    let bytes = patch.as_deref().unwrap_or_default();
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4 + 2);
    text.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut text);
    text.push('"');
    serde_json::value::RawValue::from_string(text)
        .map_err(S::Error::custom)?
        .serialize(serializer)
}

impl Response {
    fn allow(uid: String) -> Response {
        Response {
            uid,
            allowed: true,
            ..Response::default()
        }
    }

    fn refuse(uid: String, code: u16, reason: &'static str, message: String) -> Response {
        Response {
            uid,
            allowed: false,
            status: Some(Status {
                status: "Failure",
                code,
                reason,
                message,
            }),
            ..Response::default()
        }
    }

    /// An answer to a body that is not a review we can read.
    pub fn invalid(uid: String, message: String) -> Response {
        Response::refuse(uid, 400, "BadRequest", message)
    }

    /// The refusal message, if refused.
    pub fn message(&self) -> Option<&str> {
        self.status.as_ref().map(|s| s.message.as_str())
    }

    /// The whole AdmissionReview carrying this response, as JSON.
    pub fn to_review_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct OutgoingReview<'a> {
            api_version: &'static str,
            kind: &'static str,
            response: &'a Response,
        }
        // Room for all of it at once: the envelope, the patch as base64, the texts (a few
        // escaped), so that the buffer is not grown and copied as it is written.
        let texts: usize = self.warnings.iter().map(String::len).sum::<usize>()
            + self.message().map_or(0, str::len);
        let patch = self.patch.as_ref().map_or(0, |p| p.len().div_ceil(3) * 4);
        let mut json = Vec::with_capacity(256 + self.uid.len() + patch + texts + texts / 8);
        let written = serde_json::to_writer(
            &mut json,
            &OutgoingReview {
                api_version: API_VERSION,
                kind: "AdmissionReview",
                response: self,
            },
        );
        match written {
            Ok(()) => json,
            // Only the raw patch could fail to be written (it cannot: base64 in quotes is
            // JSON); the apiserver still gets a review it can read, without the patch.
            Err(_) => serde_json::to_vec(&OutgoingReview {
                api_version: API_VERSION,
                kind: "AdmissionReview",
                response: &Response::invalid(
                    self.uid.clone(),
                    "the webhook could not write its answer".to_owned(),
                ),
            })
            .unwrap_or_default(),
        }
    }
}

/// Reviews one AdmissionReview body. `entrypoints` answers image lookups a previous call asked
/// for in [`Reviewed::lookup`] (empty on the first call).
pub fn review(body: &[u8], policy: &Policy, entrypoints: &Entrypoints) -> Reviewed {
    if !may_concern_us(body) {
        return match read_request::<IgnoredAny>(body) {
            Ok(request) => Reviewed {
                response: Response::allow(request.uid.into_owned()),
                imports: None,
                verdict: Verdict::Unchanged,
                kind: kind_label(&request.kind.kind),
                lookup: None,
            },
            Err(reason) => unreadable(body, reason),
        };
    }
    // The volume policy's common case needs no tree at all.
    if policy.enforce
        && policy.injector.is_none()
        && let Some(reviewed) = plain_mounts::review(body)
    {
        return reviewed;
    }
    review_tree(body, policy, entrypoints)
}

/// The answer to a body that is not a review we can read, with its uid if it has one.
fn unreadable(body: &[u8], reason: String) -> Reviewed {
    Reviewed {
        response: Response::invalid(uid_of(body).unwrap_or_default(), reason),
        imports: None,
        verdict: Verdict::Invalid,
        kind: kind_label(""),
        lookup: None,
    }
}

/// The review of a body that may concern us, on a tree of its object.
fn review_tree(body: &[u8], policy: &Policy, entrypoints: &Entrypoints) -> Reviewed {
    let invalid = |reason: String| unreadable(body, reason);
    // The volume policy alone reads a few fields of the pod template: only those are built.
    // Injection reads (and copies into its init container) much of a Pod: all of it is.
    let prune = policy.injector.is_none();
    let read = with_value_budget(|| {
        if prune {
            read_request::<Built<ReadByMutate>>(body).map(|request| request.map_object(|o| o.0))
        } else {
            read_request::<Built<Whole>>(body).map(|request| request.map_object(|o| o.0))
        }
    });
    let request = match read {
        Ok(request) => request,
        Err(reason) => return invalid(reason),
    };
    let kind = request.kind.kind.into_owned();
    let label = kind_label(&kind);
    let uid = request.uid.into_owned();
    let namespace = request.namespace.map(Cow::into_owned).unwrap_or_default();
    let relevant = match (kind.as_str(), &*request.operation) {
        ("Pod", "CREATE") => true,
        ("Pod", _) => false,
        (_, "CREATE" | "UPDATE") => true,
        _ => false,
    };
    // What the apiserver would not have sent with the chart's matchConditions (crate::matching):
    // admitted untouched here too, so that the answer does not depend on the configuration.
    let concerns_us = |object: &Value| {
        (policy.enforce && crate::matching::enforce_concerns(object))
            || (policy.injector.is_some()
                && kind == "Pod"
                && crate::matching::inject_concerns(object))
    };
    let Some(mut original) = request
        .object
        .filter(|object| relevant && concerns_us(object))
    else {
        return Reviewed {
            response: Response::allow(uid),
            imports: None,
            verdict: Verdict::Unchanged,
            kind: label,
            lookup: None,
        };
    };
    // NB: the apiserver sends the object with its kind, but the request's kind is authoritative.
    if let Some(map) = original.as_object_mut() {
        map.insert("kind".into(), Value::String(kind.clone()));
    }
    // The volume policy alone records the patch as it changes the object, so the object is
    // changed in place; injection reshapes a Pod, whose patch is the diff of two copies.
    let direct = policy.injector.is_none();
    let mut mutated = if direct {
        std::mem::take(&mut original)
    } else {
        original.clone()
    };
    let mut lookups = Vec::new();
    let enforced = if policy.enforce {
        mutate(&mut mutated, policy.subpath)
    } else {
        Ok(Mutation::default())
    };
    let mutation = enforced.and_then(|mut mutation| {
        if let (Some(settings), "Pod") = (&policy.injector, kind.as_str()) {
            let Injection {
                warnings,
                lookups: images,
            } = inject(&mut mutated, settings, entrypoints)?;
            mutation.warnings.extend(warnings);
            lookups = images;
        }
        Ok(mutation)
    });
    if !lookups.is_empty() && mutation.is_ok() {
        let spec = &original["spec"];
        let text = |value: &Value| value.as_str().map(str::to_owned);
        return Reviewed {
            response: Response::allow(uid),
            imports: None,
            verdict: Verdict::Unchanged,
            kind: label,
            lookup: Some(LookupRequest {
                namespace,
                service_account: text(&spec["serviceAccountName"])
                    .unwrap_or_else(|| "default".to_owned()),
                pull_secrets: spec["imagePullSecrets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|reference| text(&reference["name"]))
                    .collect(),
                images: lookups,
            }),
        };
    }
    match mutation {
        Err(Refusal::Invalid(reason)) => Reviewed {
            response: Response::invalid(uid, reason),
            imports: None,
            verdict: Verdict::Invalid,
            kind: label,
            lookup: None,
        },
        Err(Refusal::Forbidden(denial)) => Reviewed {
            response: Response::refuse(uid, 403, "Forbidden", denial),
            imports: None,
            verdict: Verdict::Denied,
            kind: label,
            lookup: None,
        },
        Ok(Mutation {
            warnings,
            imports,
            patch,
            reshaped,
        }) => {
            let patch = if direct && !reshaped {
                Patch(patch)
            } else {
                if direct {
                    // The shorthand added volumes and mounts to the only copy: the object as it
                    // came is read again, which only such objects pay for.
                    original = match reread(body, &kind) {
                        Ok(object) => object,
                        Err(reason) => return invalid(reason),
                    };
                }
                patch_between(&original, &mutated)
            };
            let mut response = Response::allow(uid);
            let verdict = if patch.0.is_empty() {
                Verdict::Unchanged
            } else {
                match serde_json::to_vec(&patch) {
                    Ok(bytes) => {
                        response.patch = Some(bytes);
                        response.patch_type = Some("JSONPatch");
                        Verdict::Patched
                    }
                    Err(e) => return invalid(format!("failed to serialise the patch: {e}")),
                }
            };
            response.warnings = warnings;
            let imports = (!imports.is_empty()).then_some((namespace, imports));
            Reviewed {
                response,
                imports,
                verdict,
                kind: label,
                lookup: None,
            }
        }
    }
}

/// The object of `body` as the volume policy reads it, again, with the request's `kind`.
fn reread(body: &[u8], kind: &str) -> Result<Value, String> {
    let request = with_value_budget(|| read_request::<Built<ReadByMutate>>(body))?;
    let mut object = request.object.map(|o| o.0).unwrap_or_default();
    if let Some(map) = object.as_object_mut() {
        map.insert("kind".into(), Value::String(kind.to_owned()));
    }
    Ok(object)
}

/// The object, built within the parse's budget of values ([`with_value_budget`]), in the
/// shape `S` names.
struct Built<S>(Value, std::marker::PhantomData<S>);

/// Which parts of the object a review builds.
trait ObjectShape {
    const SHAPE: &'static Shape;
}

/// The parts [`mutate::READ_BY_MUTATE`](crate::mutate::READ_BY_MUTATE) reads.
struct ReadByMutate;

impl ObjectShape for ReadByMutate {
    const SHAPE: &'static Shape = &READ_BY_MUTATE;
}

/// All of it: injection reads much of a Pod and copies parts into its init container.
struct Whole;

impl ObjectShape for Whole {
    const SHAPE: &'static Shape = &Shape::All;
}

impl<'de, S: ObjectShape> Deserialize<'de> for Built<S> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Pruned(S::SHAPE)
            .deserialize(deserializer)
            .map(|value| Built(value, std::marker::PhantomData))
    }
}

impl<'a, O> IncomingRequest<'a, O> {
    fn map_object<P>(self, f: impl FnOnce(O) -> P) -> IncomingRequest<'a, P> {
        IncomingRequest {
            uid: self.uid,
            kind: self.kind,
            operation: self.operation,
            namespace: self.namespace,
            object: self.object.map(f),
        }
    }
}

/// The request of a body that should be a review of the version we answer.
fn read_request<'a, O: Deserialize<'a>>(body: &'a [u8]) -> Result<IncomingRequest<'a, O>, String> {
    // UTF-8 checked once for the whole body, not string by string as the parse meets them.
    let text = std::str::from_utf8(body)
        .map_err(|_| "the body is not an AdmissionReview: it is not UTF-8 text".to_owned())?;
    let review = serde_json::from_str::<IncomingReview<O>>(text)
        .map_err(|e| format!("the body is not an AdmissionReview: {}", not_read(&e)))?;
    request_of(review)
}

/// Why a body could not be read, in our words: serde's own message quotes what it did not
/// expect (a string of the wrong type whole, perhaps an env value), which neither the answer
/// nor a log line may carry.
fn not_read(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {} column {}", error.line(), error.column());
    match error.classify() {
        Category::Data if error.to_string().starts_with(crate::shape::OVER_BUDGET) => {
            crate::shape::OVER_BUDGET.to_owned()
        }
        Category::Data => format!("a field has a type or value a review cannot have, at {at}"),
        Category::Syntax => format!("it is not JSON (at {at})"),
        Category::Eof | Category::Io => "it ends before its JSON does".to_owned(),
    }
}

/// The request of a review of the version we answer.
fn request_of<'a, O>(review: IncomingReview<'a, O>) -> Result<IncomingRequest<'a, O>, String> {
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        return Err(format!(
            "expected an AdmissionReview of {API_VERSION}, got {:?} {:?}; list only v1 in admissionReviewVersions",
            ssi_core::names::shown(&review.kind, 64),
            ssi_core::names::shown(&review.api_version, 64)
        ));
    }
    let request = review
        .request
        .ok_or_else(|| "the AdmissionReview carries no request".to_owned())?;
    // Echoed in the answer, which is held until its client reads it: a uid is a UID.
    if request.uid.len() > MAX_UID_BYTES {
        return Err(format!(
            "the request's uid is longer than {MAX_UID_BYTES} bytes: the apiserver sends a UID"
        ));
    }
    Ok(request)
}

/// Whether the mutation could change anything: every volume, annotation and driver it acts on
/// contains `secrets-store`. Most pods in a cluster do not, and are admitted without building,
/// copying and diffing their object. The whole body is searched: a marker outside the object
/// only costs the full path. NB: a JSON escape (`\u002d`) could hide the marker, so any `\u`
/// takes the full path.
fn may_concern_us(body: &[u8]) -> bool {
    // Built once: building a searcher costs about as much as searching a review.
    static MARKER: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"secrets-store"));
    static ESCAPE: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\\u"));
    MARKER.find(body).is_some() || ESCAPE.find(body).is_some()
}

/// The JSON patch from `original` to `mutated`, exactly as `json_patch::diff` makes it. This
/// walks the parts whose shape is unchanged (same keys, same array length) with a stack of
/// borrowed keys and leaves only the parts that differ in shape to json_patch, which builds and
/// escapes a pointer string for every key it passes.
fn patch_between(original: &Value, mutated: &Value) -> Patch {
    let mut patch = Patch(Vec::new());
    changed_parts(original, mutated, &mut Vec::new(), &mut patch);
    patch
}

fn changed_parts<'v>(
    original: &'v Value,
    mutated: &'v Value,
    at: &mut Vec<Token<'v>>,
    patch: &mut Patch,
) {
    match (original, mutated) {
        (Value::Object(before), Value::Object(after)) if before.keys().eq(after.keys()) => {
            for ((key, before), after) in before.iter().zip(after.values()) {
                at.push(Token::new(key.as_str()));
                changed_parts(before, after, at, patch);
                at.pop();
            }
        }
        (Value::Array(before), Value::Array(after)) if before.len() == after.len() => {
            for (index, (before, after)) in before.iter().zip(after).enumerate() {
                at.push(Token::from(index));
                changed_parts(before, after, at, patch);
                at.pop();
            }
        }
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => {
            let prefix = PointerBuf::from_tokens(at.iter());
            patch.0.extend(
                json_patch::diff(original, mutated)
                    .0
                    .into_iter()
                    .map(|operation| under(&prefix, operation)),
            );
        }
        _ if original == mutated => {}
        _ => patch
            .0
            .push(PatchOperation::Replace(json_patch::ReplaceOperation {
                path: PointerBuf::from_tokens(at.iter()),
                value: mutated.clone(),
            })),
    }
}

/// `operation` with its paths moved below `prefix`.
fn under(prefix: &Pointer, operation: PatchOperation) -> PatchOperation {
    match operation {
        PatchOperation::Add(mut op) => {
            op.path = prefix.concat(&op.path);
            PatchOperation::Add(op)
        }
        PatchOperation::Remove(mut op) => {
            op.path = prefix.concat(&op.path);
            PatchOperation::Remove(op)
        }
        PatchOperation::Replace(mut op) => {
            op.path = prefix.concat(&op.path);
            PatchOperation::Replace(op)
        }
        PatchOperation::Move(mut op) => {
            op.path = prefix.concat(&op.path);
            op.from = prefix.concat(&op.from);
            PatchOperation::Move(op)
        }
        PatchOperation::Copy(mut op) => {
            op.path = prefix.concat(&op.path);
            op.from = prefix.concat(&op.from);
            PatchOperation::Copy(op)
        }
        PatchOperation::Test(mut op) => {
            op.path = prefix.concat(&op.path);
            PatchOperation::Test(op)
        }
    }
}

/// The request uid of a body that is JSON but not a valid AdmissionReview. Only the uid is
/// built: the rest of the body, whatever its size, is skipped.
fn uid_of(body: &[u8]) -> Option<String> {
    let uid = serde_json::from_slice::<Field<Field<Text>>>(body)
        .ok()?
        .0?
        .0?
        .0?;
    // A uid is a UID: anything longer is not one, and is not echoed.
    (uid.len() <= MAX_UID_BYTES).then_some(uid)
}

/// The member `request` (then `uid`) of an object, read as serde_json's `Value` reads it: a
/// repeated key keeps its last value, and a value of another type reads as none. Every other
/// member is skipped unbuilt.
struct Field<T>(Option<T>);

/// A string, or none for any other value (skipped unbuilt).
struct Text(Option<String>);

trait FieldName {
    const NAME: &'static str;
}

impl FieldName for Field<Text> {
    const NAME: &'static str = "uid";
}

impl FieldName for Field<Field<Text>> {
    const NAME: &'static str = "request";
}

/// The visits of a value that is not the one wanted: skipped, read as `$none`.
macro_rules! read_as_none {
    ($value:ty, $none:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$value, E> {
            Ok($none)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$value, E> {
            Ok($none)
        }
        fn visit_u64<E>(self, _: u64) -> Result<$value, E> {
            Ok($none)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$value, E> {
            Ok($none)
        }
        fn visit_unit<E>(self) -> Result<$value, E> {
            Ok($none)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<$value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($none)
        }
    };
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T>
where
    Field<T>: FieldName,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Members<T>
        where
            Field<T>: FieldName,
        {
            type Value = Field<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            read_as_none!(Field<T>, Field(None));
            fn visit_str<E>(self, _: &str) -> Result<Field<T>, E> {
                Ok(Field(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Field<T>, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == <Field<T> as FieldName>::NAME {
                        found = Some(map.next_value::<T>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Field(found))
            }
        }
        deserializer.deserialize_any(Members(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            read_as_none!(Text, Text(None));
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_owned())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// The longest uid echoed back; the apiserver's are 36 characters.
const MAX_UID_BYTES: usize = 128;

#[cfg(test)]
pub(crate) mod tests {
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
    fn a_body_that_is_not_a_review_is_refused_without_quoting_it() {
        let secret = "s3cr3t-".repeat(1000);
        let policy: Policy = SubpathPolicy::Deny.into();
        let entrypoints = Entrypoints::new();
        for body in [
            // A field of the wrong type: serde would quote the string whole.
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": secret}),
            json!({"apiVersion": secret, "kind": "AdmissionReview", "request": {"uid": "u"}}),
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                               "operation": "CREATE", "namespace": "n",
                               "object": {"kind": "Pod", "metadata": {"annotations": {"secrets-store.deckhouse.io/import": 7}},
                                          "spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": 12}]}],
                                                   "volumes": [{"name": secret}]}}}}),
        ] {
            let reviewed = review(body.to_string().as_bytes(), &policy, &entrypoints);
            let answer = serde_json::to_string(&reviewed.response).unwrap();
            assert!(
                !answer.contains("s3cr3t"),
                "{}",
                ssi_core::names::shown(&answer, 300)
            );
            assert!(answer.len() < 1024, "{answer}");
        }
        let reviewed = review(
            format!("{{\"kind\": \"{secret}").as_bytes(),
            &policy,
            &entrypoints,
        );
        let answer = serde_json::to_string(&reviewed.response).unwrap();
        assert!(
            !answer.contains("s3cr3t") && answer.contains("ends before"),
            "{answer}"
        );
    }

    #[test]
    fn the_answer_carries_the_patch_as_base64_and_a_long_uid_is_not_echoed() {
        let policy: Policy = SubpathPolicy::Deny.into();
        let reviewed = review(DEPLOYMENT.as_bytes(), &policy, &Entrypoints::new());
        let answer: Value = serde_json::from_slice(&reviewed.response.to_review_json()).unwrap();
        assert_eq!(answer["apiVersion"], API_VERSION);
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let sent = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(Some(sent), reviewed.response.patch);

        let mut long = serde_json::from_str::<Value>(DEPLOYMENT).unwrap();
        long["request"]["uid"] = json!("u".repeat(MAX_UID_BYTES + 1));
        let reviewed = review(long.to_string().as_bytes(), &policy, &Entrypoints::new());
        assert_eq!(reviewed.verdict, Verdict::Invalid);
        assert_eq!(reviewed.response.uid, "");
        let answer = reviewed.response.to_review_json();
        assert!(answer.len() < 512, "{}", String::from_utf8_lossy(&answer));
    }

    #[test]
    fn the_patch_is_json_patchs_diff_with_equal_parts_skipped() {
        let guide: Value = serde_json::from_str(DEPLOYMENT).unwrap();
        let deployment = guide["request"]["object"].clone();
        let mut mutated = deployment.clone();
        mutate(&mut mutated, SubpathPolicy::Deny).unwrap();
        let cases = [
            (deployment.clone(), mutated),
            (deployment.clone(), deployment),
            (
                json!({"a": {"b": {"c": 1, "d": [1, 2]}, "e": "same"}, "x/y~z": {"k": 1}}),
                json!({"a": {"b": {"c": 2, "d": [1, 3, 4]}, "e": "same"}, "x/y~z": {"k": 2}}),
            ),
            (
                json!({"spec": {"volumes": [{"name": "v"}], "old": true}}),
                json!({"spec": {"volumes": [], "new": {"n": null}}}),
            ),
            (json!({"a": [1]}), json!(["whole", "document"])),
        ];
        for (before, after) in cases {
            let patch = patch_between(&before, &after);
            assert_eq!(
                patch,
                json_patch::diff(&before, &after),
                "{before} -> {after}"
            );
            let mut patched = before.clone();
            json_patch::patch(&mut patched, &patch).unwrap();
            assert_eq!(patched, after);
        }
    }

    /// The volume policy with injection on: the review builds the whole object.
    pub(crate) fn injecting_policy() -> Policy {
        Policy {
            injector: Some(crate::inject::InjectorSettings {
                image: "registry.example.com/ssi-injector:1".into(),
                default_address: None,
                default_login: Default::default(),
                default_namespace: None,
                default_ca_pem: None,
                token_audience: String::new(),
                registry_lookup: false,
            }),
            ..SubpathPolicy::Deny.into()
        }
    }

    /// A CREATE review of `object` (UPDATE with `old` as the old object).
    fn review_of(object: &Value, old: Option<&Value>) -> String {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": object["kind"]},
                "namespace": "ns", "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
                "object": object, "oldObject": old}})
        .to_string()
    }

    #[test]
    fn pruned_objects_get_the_whole_objects_answers() {
        let guide: Value = serde_json::from_str(DEPLOYMENT).unwrap();
        let subpath: Value = serde_json::from_str(SUBPATH_POD).unwrap();
        let csi = |attributes: Value| json!({"driver": "secrets-store.csi.deckhouse.io", "volumeAttributes": attributes});
        let volume = json!({"name": "s", "csi": csi(json!({"secretsStoreImport": "app"}))});
        let busy_container = |mounts: Value| {
            json!({"name": "app", "image": "app:1",
            "env": [{"name": "A", "value": "plain"}], "resources": {"limits": {"cpu": "1"}},
            "livenessProbe": {"httpGet": {"path": "/", "port": 8080}}, "volumeMounts": mounts})
        };
        let pod = |metadata: Value, spec: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
        let annotated = |annotations: Value| json!({"name": "p", "labels": {"a": "b"}, "annotations": annotations});
        let workload = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"app": "d"}, "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"},
                        "annotations": {"secrets-store.deckhouse.io/import": "app=/mnt/app,other"}},
                    "spec": {"serviceAccountName": "sa", "volumes": [volume.clone()],
                        "initContainers": [busy_container(json!([{"name": "s", "mountPath": "/i", "readOnly": false}]))],
                        "containers": [busy_container(json!([{"name": "s", "mountPath": "/s"}])), {"name": "no-mounts", "image": "x"}],
                        "ephemeralContainers": [busy_container(json!([{"name": "s", "mountPath": "/e", "subPathExpr": "$(X)"}]))]}}},
            "status": {"replicas": 3}});
        let mut allowed = workload.clone();
        allowed["metadata"]["annotations"] =
            json!({"secrets-store.deckhouse.io/allow-subpath": "true"});
        let cronjob = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"generateName": "c-"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": allowed["spec"]["template"].clone()}}}});
        // A CronJob allowed subPath, its job template with labels of its own (the Jobs'), and
        // one that no longer allows it while its job template still carries the copy.
        let allowed_cronjob = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "c", "annotations": {"secrets-store.deckhouse.io/allow-subpath": "true"}},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"metadata": {"labels": {"team": "a"}},
                "spec": {"template": allowed["spec"]["template"].clone()}}}});
        let mut disallowed_cronjob = allowed_cronjob.clone();
        disallowed_cronjob["metadata"]["annotations"] = json!({});
        disallowed_cronjob["spec"]["jobTemplate"]["metadata"]["annotations"] =
            json!({"secrets-store.deckhouse.io/allow-subpath-inherited": "true"});
        let reviews = [
            DEPLOYMENT.to_owned(),
            SUBPATH_POD.to_owned(),
            review_of(&allowed_cronjob, None),
            review_of(&disallowed_cronjob, Some(&allowed_cronjob)),
            review_of(&workload, None),
            review_of(&allowed, Some(&workload)),
            review_of(&cronjob, None),
            review_of(&guide["request"]["object"], Some(&guide["request"]["object"])),
            review_of(&pod(annotated(json!({"secrets-store.deckhouse.io/allow-subpath": "yes"})), subpath["request"]["object"]["spec"].clone()), None),
            review_of(&pod(annotated(json!({"secrets-store.deckhouse.io/import": "app"})), json!({"volumes": {"not": "a list"}, "containers": []})), None),
            review_of(&pod(annotated(json!({"secrets-store.deckhouse.io/import": "app"})), json!({"containers": ["not an object"]})), None),
            review_of(&pod(annotated(json!({})), json!({"volumes": [{"name": "s", "csi": csi(json!({"secretsStoreImport": "app", "csi.storage.k8s.io/pod.name": "x"}))}]})), None),
            review_of(&pod(annotated(json!({})), json!({"volumes": [{"name": "s", "csi": csi(json!({}))}]})), None),
            review_of(&pod(json!({"generateName": "g-"}), json!({"volumes": [volume.clone(), {"name": "o", "csi": {"driver": "other"}}],
                "containers": [busy_container(json!([{"name": "o", "mountPath": "/o"}, {"name": "s", "mountPath": "/s", "readOnly": false}]))]})), None),
            review_of(&json!({"kind": "Deployment", "metadata": {"name": "odd"}, "spec": {"template": "secrets-store"}}), None),
            // Written by hand: an escaped key and a repeated one.
            r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u-2",
                "kind": {"kind": "Pod"}, "operation": "CREATE", "namespace": "ns",
                "object": {"kind": "Pod", "metadata": {"name": "e"}, "spec": {"volu\u006des": [
                    {"name": "s", "csi": {"driver": "secrets-store.csi.deckhouse.io", "volumeAttributes": {"secretsStoreImport": "app"}}}],
                    "containers": [{"name": "first"}],
                    "containers": [{"name": "app", "volumeMounts": [{"name": "s", "mountPath": "/s"}]}]}}}}"#.to_owned(),
        ];
        let pruned: Policy = SubpathPolicy::Deny.into();
        // Injection reads the whole object; none of these Pods asks for it.
        let whole = injecting_policy();
        let mut verdicts = Vec::new();
        for body in &reviews {
            let (a, b) = (
                review(body.as_bytes(), &pruned, &Entrypoints::new()),
                review(body.as_bytes(), &whole, &Entrypoints::new()),
            );
            // The same answer, but for the patch's form: the pruned review records what it
            // changes, the whole one diffs two copies; both patch the object alike (below).
            let without_patch = |reviewed: &Reviewed| {
                let mut answer: Value =
                    serde_json::from_slice(&reviewed.response.to_review_json()).unwrap();
                answer["response"].as_object_mut().unwrap().remove("patch");
                answer
            };
            assert_eq!(without_patch(&a), without_patch(&b), "{body}");
            assert_eq!(
                (a.verdict, a.kind, &a.imports),
                (b.verdict, b.kind, &b.imports),
                "{body}"
            );
            // Every patch applies to the whole object, leaves what was skipped alone, and
            // makes what the whole review's makes.
            let patched = |reviewed: &Reviewed| {
                let mut object: Value =
                    serde_json::from_str::<Value>(body).unwrap()["request"]["object"].clone();
                if let Some(patch) = &reviewed.response.patch {
                    json_patch::patch(
                        &mut object,
                        &serde_json::from_slice::<Patch>(patch).unwrap(),
                    )
                    .unwrap();
                }
                object
            };
            let object = patched(&a);
            assert_eq!(object, patched(&b), "{body}");
            let before = serde_json::from_str::<Value>(body).unwrap()["request"]["object"].clone();
            assert_eq!(object["status"], before["status"]);
            assert_eq!(
                object["metadata"]["managedFields"],
                before["metadata"]["managedFields"]
            );
            verdicts.push(a.verdict);
        }
        // The corpus reaches every verdict.
        for verdict in [
            Verdict::Patched,
            Verdict::Denied,
            Verdict::Invalid,
            Verdict::Unchanged,
        ] {
            assert!(verdicts.contains(&verdict), "{verdict:?} in {verdicts:?}");
        }
    }

    #[test]
    fn the_guides_deployment_is_allowed_with_a_read_only_patch() {
        let reviewed = review(
            DEPLOYMENT.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
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
        let text = String::from_utf8(reviewed.response.to_review_json()).unwrap();
        assert!(text.contains("\"patchType\":\"JSONPatch\""), "{text}");
    }

    #[test]
    fn the_guides_subpath_example_is_denied_without_echoing_the_pod() {
        let reviewed = review(
            SUBPATH_POD.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        assert!(!reviewed.response.allowed);
        assert_eq!(reviewed.verdict, Verdict::Denied);
        assert_eq!(
            reviewed.response.uid,
            "5b7e2c10-1111-4c2d-8e3f-aa00bb11cc22"
        );
        let message = &reviewed.response.message().unwrap();
        assert!(
            message.contains("Pod backend-5d8f7c-") && message.contains("/app/settings.ini"),
            "{message}"
        );
        let text = String::from_utf8(reviewed.response.to_review_json()).unwrap();
        assert!(
            !text.contains("plain-value-in-spec"),
            "an env value leaked: {text}"
        );
    }

    #[test]
    fn unreadable_annotations_are_invalid_and_policy_refusals_forbidden() {
        let denied = review(
            SUBPATH_POD.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        let code = |reviewed: &Reviewed| reviewed.response.status.as_ref().map(|s| s.code);
        assert_eq!(code(&denied), Some(403));
        // The same pod with an allow-subpath value that is no boolean: the object is wrong.
        let unreadable = SUBPATH_POD.replacen(
            "\"metadata\": {",
            "\"metadata\": {\"annotations\": {\"secrets-store.deckhouse.io/allow-subpath\": \"yes\"}, ",
            1,
        );
        assert_ne!(
            unreadable, SUBPATH_POD,
            "the fixture has an object metadata"
        );
        let invalid = review(
            unreadable.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        assert_eq!(invalid.verdict, Verdict::Invalid);
        assert_eq!(code(&invalid), Some(400));
        let message = invalid.response.message().unwrap();
        assert!(message.contains("allow-subpath is \"yes\""), "{message}");
    }

    #[test]
    fn with_the_warn_policy_the_subpath_pod_passes_with_a_warning() {
        let reviewed = review(
            SUBPATH_POD.as_bytes(),
            &SubpathPolicy::Warn.into(),
            &Entrypoints::new(),
        );
        assert!(reviewed.response.allowed);
        assert_eq!(reviewed.response.warnings.len(), 1);
    }

    #[test]
    fn undecodable_input_is_invalid_and_keeps_the_uid_when_readable() {
        let garbage = review(
            b"not json",
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        assert!(!garbage.response.allowed);
        assert_eq!(garbage.verdict, Verdict::Invalid);
        let partial = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                             "request": {"uid": "u-1", "kind": "broken"}});
        let reviewed = review(
            partial.to_string().as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        assert!(!reviewed.response.allowed);
        assert_eq!(reviewed.response.uid, "u-1");
        let no_request = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
        assert!(
            !review(
                no_request.to_string().as_bytes(),
                &SubpathPolicy::Deny.into(),
                &Entrypoints::new()
            )
            .response
            .allowed
        );
    }

    #[test]
    fn a_review_of_too_many_values_is_refused_naming_the_limit_and_garbage_is_not_built() {
        // A Pod of 100,000 tiny volumes and one of ours: about 3 MiB, 20 times that as a tree.
        let mut volumes: Vec<Value> = (0..100_000)
            .map(|i| json!({"name": format!("v{i}"), "emptyDir": {}}))
            .collect();
        volumes.push(
            json!({"name": "s", "csi": {"driver": "secrets-store.csi.deckhouse.io",
            "volumeAttributes": {"secretsStoreImport": "app"}}}),
        );
        let pod = json!({"kind": "Pod", "metadata": {"name": "p"},
            "spec": {"volumes": volumes, "containers": [{"name": "app"}]}});
        let body = review_of(&pod, None);
        assert!(body.len() > 3_000_000, "{}", body.len());
        let whole = injecting_policy();
        for policy in [SubpathPolicy::Deny.into(), whole] {
            let reviewed = review(body.as_bytes(), &policy, &Entrypoints::new());
            assert_eq!(reviewed.verdict, Verdict::Invalid);
            assert!(!reviewed.response.allowed);
            assert_eq!(reviewed.response.uid, "u-1", "the uid is still answered");
            let message = reviewed.response.message().unwrap();
            assert!(
                message.contains(&format!(
                    "more than {} JSON values",
                    crate::shape::MAX_VALUES
                )),
                "{message}"
            );
            assert!(message.len() < 300, "{message}");
        }
        // The uid of a body that is no review is read without building the rest of it.
        let not_a_review = format!(
            r#"{{"apiVersion": "v0", "request": {{"uid": "u-9", "object": [{}]}}}}"#,
            vec!["{}"; 1_000_000].join(",")
        );
        let reviewed = review(
            not_a_review.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        assert_eq!(reviewed.verdict, Verdict::Invalid);
        assert_eq!(reviewed.response.uid, "u-9");
        let long_uid = json!({"request": {"uid": "u".repeat(10_000)}}).to_string();
        let reviewed = review(
            long_uid.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        assert_eq!(
            reviewed.response.uid, "",
            "a uid that is none is not echoed"
        );
        // As serde_json's Value reads it: a repeated member keeps its last value (the fuzzer's
        // finding: a repeated uid made the typed read fail).
        for (body, uid) in [
            (
                &br#"{"request": {"uid": "first", "uid": "u-2", "kind": 1}, "x": [1]}"#[..],
                "u-2",
            ),
            (
                br#"{"request": "AdmissionReview", "request": {"uid": "u-3"}}"#,
                "u-3",
            ),
            (
                br#"{"request": {"uid": "u-4"}, "request": [1, {"uid": "x"}]}"#,
                "",
            ),
            (br#"{"request": {"uid": 5}}"#, ""),
            (br#"["request"]"#, ""),
        ] {
            let reviewed = review(body, &SubpathPolicy::Deny.into(), &Entrypoints::new());
            assert_eq!(
                reviewed.response.uid,
                uid,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn pod_updates_and_deletes_are_allowed_untouched() {
        let mut request: Value = serde_json::from_str(SUBPATH_POD).unwrap();
        request["request"]["operation"] = json!("UPDATE");
        let reviewed = review(
            request.to_string().as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        assert!(reviewed.response.allowed);
        assert!(reviewed.response.patch.is_none());
    }

    #[test]
    fn reviewing_the_patched_object_yields_no_patch() {
        let first = review(
            DEPLOYMENT.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        let mut request: Value = serde_json::from_str(DEPLOYMENT).unwrap();
        request["request"]["object"] = patched_object(DEPLOYMENT, &first);
        let second = review(
            request.to_string().as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        assert!(second.response.allowed);
        assert!(
            second.response.patch.is_none(),
            "reinvocation must be a no-op"
        );
        assert_eq!(second.verdict, Verdict::Unchanged);
    }

    #[test]
    fn objects_without_the_marker_are_admitted_untouched_and_escapes_cannot_hide_it() {
        let plain = DEPLOYMENT.replace("secrets-store.csi.deckhouse.io", "other.csi.example.com");
        let reviewed = review(
            plain.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        assert!(reviewed.response.allowed);
        assert_eq!(reviewed.verdict, Verdict::Unchanged);
        assert!(reviewed.response.patch.is_none());

        // The same driver name written with a JSON escape is still our driver.
        let escaped = DEPLOYMENT.replace(
            "secrets-store.csi.deckhouse.io",
            "secrets\\u002dstore.csi.deckhouse.io",
        );
        assert_ne!(escaped, DEPLOYMENT);
        let reviewed = review(
            escaped.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        assert_eq!(reviewed.verdict, Verdict::Patched);
        let escaped_subpath = SUBPATH_POD.replace(
            "secrets-store.csi.deckhouse.io",
            "secrets\\u002dstore.csi.deckhouse.io",
        );
        let reviewed = review(
            escaped_subpath.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new(),
        );
        assert_eq!(reviewed.verdict, Verdict::Denied);
    }
}
