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

/// A boolean annotation, spelled as Go's `strconv.ParseBool` accepts (what the Deckhouse
/// webhook reads): `1`, `t`, `T`, `TRUE`, `true`, `True` and the false forms. Anything else is
/// refused, naming the annotation and `owner` (the object, for the message): Deckhouse would
/// silently read it as false.
pub fn flag(object: &Value, name: &str, owner: &str) -> Result<Option<bool>, Refusal> {
    match get(object, name) {
        None => Ok(None),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(Some(true)),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(Some(false)),
        Some(other) => {
            let shown = ssi_core::names::shown(other, 64);
            Err(Refusal::Invalid(format!(
                "{owner}: annotation {PREFIX}{name} is {shown:?}; write \"true\" or \"false\" \
                 (the Deckhouse webhook would silently take it as false)"
            )))
        }
    }
}

/// A label of `object`, if it is text.
pub fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get("metadata")?.get("labels")?.get(key)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_are_true_false_or_a_refusal_naming_them() {
        let object = |value: &str| json!({"metadata": {"annotations": {"secrets-store.deckhouse.io/mutate-probes": value}}});
        for (text, value) in [
            ("1", true),
            ("t", true),
            ("T", true),
            ("TRUE", true),
            ("true", true),
            ("True", true),
            ("0", false),
            ("f", false),
            ("F", false),
            ("FALSE", false),
            ("false", false),
            ("False", false),
        ] {
            let parsed = flag(&object(text), "mutate-probes", "Pod p");
            assert_eq!(parsed, Ok(Some(value)), "{text}");
        }
        for text in ["yes", "on", "tRUE", " true", ""] {
            assert!(
                flag(&object(text), "mutate-probes", "Pod p").is_err(),
                "{text:?}"
            );
        }
        assert_eq!(flag(&json!({}), "mutate-probes", "Pod p"), Ok(None));
        let refusal = flag(&object("yes"), "mutate-probes", "Pod p").unwrap_err();
        assert!(matches!(refusal, Refusal::Invalid(_)));
        assert_eq!(
            refusal.message(),
            "Pod p: annotation secrets-store.deckhouse.io/mutate-probes is \"yes\"; write \"true\" or \"false\" \
             (the Deckhouse webhook would silently take it as false)"
        );
    }
}
