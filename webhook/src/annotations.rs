//! Our annotations (`secrets-store.deckhouse.io/*`) on an object or a pod template: one reader
//! and one boolean parser for the volume policy and the injection alike.

use crate::refusal::Refusal;
use serde_json::Value;

/// The prefix every annotation of ours carries.
pub const PREFIX: &str = "secrets-store.deckhouse.io/";

/// The value of the annotation `secrets-store.deckhouse.io/<name>` of `object`, if it is text.
pub fn get<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object
        .get("metadata")?
        .get("annotations")?
        .get(format!("{PREFIX}{name}"))?
        .as_str()
}

/// A boolean annotation: `"true"` or `"false"`; anything else is refused, naming the annotation
/// and `owner` (the object, for the message).
pub fn flag(object: &Value, name: &str, owner: &str) -> Result<Option<bool>, Refusal> {
    match get(object, name) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => {
            let shown: String = other.chars().take(64).collect();
            Err(Refusal::Invalid(format!(
                "{owner}: annotation {PREFIX}{name} is {shown:?}; write \"true\" or \"false\""
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_are_true_false_or_a_refusal_naming_them() {
        let object = |value: &str| json!({"metadata": {"annotations": {"secrets-store.deckhouse.io/mutate-probes": value}}});
        assert_eq!(
            flag(&object("true"), "mutate-probes", "Pod p"),
            Ok(Some(true))
        );
        assert_eq!(
            flag(&object("false"), "mutate-probes", "Pod p"),
            Ok(Some(false))
        );
        assert_eq!(flag(&json!({}), "mutate-probes", "Pod p"), Ok(None));
        let refusal = flag(&object("yes"), "mutate-probes", "Pod p").unwrap_err();
        assert!(matches!(refusal, Refusal::Invalid(_)));
        assert_eq!(
            refusal.message(),
            "Pod p: annotation secrets-store.deckhouse.io/mutate-probes is \"yes\"; write \"true\" or \"false\""
        );
    }
}
