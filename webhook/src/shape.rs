//! A tree of only the parts of a JSON object its reader needs, built while parsing: the rest is
//! still checked to be JSON, then skipped without being allocated. A review builds the object
//! this way for the volume policy (`mutate::READ_BY_MUTATE`), which reads a few fields of the pod
//! template; what it skips (labels, managed fields, images, env, probes) is most of a workload.
//!
//! Paths stay as in the whole object, and every element of a kept array is kept, so a patch
//! computed on the tree applies to the whole object unchanged.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::fmt;

/// Most JSON values (scalars, arrays and objects) one review's parse may build: a Pod's or a
/// workload's parts that the webhook reads hold a few hundred, a whole Pod (injection reads it
/// all) a thousand or two, one with hundreds of variables a few thousand. A
/// value costs up to [`ssi_core::json::BYTES_PER_VALUE`] as a tree whatever its size in the body,
/// so a body of tiny values (a Pod of 100,000 empty volumes is 3 MiB) would otherwise cost
/// eighty times its size.
pub const MAX_VALUES: usize = 8_192;

/// Runs `parse` with a budget of [`MAX_VALUES`] built values: a [`Pruned`] deserialization
/// beyond it fails with an error that names the limit.
pub fn with_value_budget<T>(parse: impl FnOnce() -> T) -> T {
    ssi_core::json::with_value_budget(MAX_VALUES, parse)
}

/// What a parse over the budget says, whole.
pub const OVER_BUDGET: &str =
    "the object has more than 8192 JSON values in the parts the webhook reads";
const _: () = assert!(MAX_VALUES == 8_192, "OVER_BUDGET names MAX_VALUES");

/// Counts one built value against the parse's budget, naming where the webhook counts.
fn spend<E: serde::de::Error>() -> Result<(), E> {
    ssi_core::json::spend::<E>().map_err(|_| E::custom(OVER_BUDGET))
}

/// Which parts of a value to build.
#[derive(Debug)]
pub enum Shape {
    /// The whole value.
    All,
    /// Of an object, the listed keys, each in its own shape. A value that is not an object is
    /// built whole, so that its reader sees (and refuses) exactly what was sent.
    Keys(&'static [(&'static str, Shape)]),
    /// Of an array, every element in this shape. A value that is not an array is built whole.
    Each(&'static Shape),
}

/// Deserializes a `Value` of the parts `self.0` names.
#[derive(Debug, Clone, Copy)]
pub struct Pruned(pub &'static Shape);

impl<'de> DeserializeSeed<'de> for Pruned {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(PrunedVisitor(self.0))
    }
}

struct PrunedVisitor(&'static Shape);

impl<'de> Visitor<'de> for PrunedVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    // Scalars become what serde_json's own Value would hold.
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        spend()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        spend()?;
        Ok(v.into())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        spend()?;
        Ok(v.into())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        spend()?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        spend()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        spend()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        spend()?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        spend()?;
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Pruned(self.0).deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        spend()?;
        let element = match self.0 {
            Shape::Each(element) => *element,
            _ => &Shape::All,
        };
        // NB: no capacity from the size hint: it is the sender's to choose.
        let mut array = Vec::new();
        while let Some(value) = seq.next_element_seed(Pruned(element))? {
            array.push(value);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        spend()?;
        let mut object = Map::new();
        while let Some(BorrowedStr(key)) = map.next_key::<BorrowedStr<'de>>()? {
            let shape = match self.0 {
                Shape::Keys(keys) => keys.iter().find(|(name, _)| *name == key).map(|(_, s)| s),
                _ => Some(&Shape::All),
            };
            match shape {
                // As serde_json's Value: a repeated key keeps its last value.
                Some(shape) => {
                    let value = map.next_value_seed(Pruned(shape))?;
                    object.insert(key.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// A string (an object key, a name), borrowed from the body unless it holds an escape: serde's
/// own `Cow` always copies, and most of a review's strings are only compared.
pub(crate) struct BorrowedStr<'de>(pub(crate) Cow<'de, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for BorrowedStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(BorrowedStrVisitor(std::marker::PhantomData))
    }
}

struct BorrowedStrVisitor<'a>(std::marker::PhantomData<&'a str>);

impl<'de: 'a, 'a> Visitor<'de> for BorrowedStrVisitor<'a> {
    type Value = BorrowedStr<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<BorrowedStr<'a>, E> {
        Ok(BorrowedStr(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<BorrowedStr<'a>, E> {
        Ok(BorrowedStr(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<BorrowedStr<'a>, E> {
        Ok(BorrowedStr(Cow::Owned(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    static ITEM: Shape = Shape::Keys(&[("name", Shape::All), ("tags", Shape::All)]);
    static DOCUMENT: Shape = Shape::Keys(&[
        ("kind", Shape::All),
        ("items", Shape::Each(&ITEM)),
        ("meta", Shape::Keys(&[("name", Shape::All)])),
    ]);

    fn pruned(text: &str) -> Value {
        Pruned(&DOCUMENT)
            .deserialize(&mut serde_json::Deserializer::from_str(text))
            .unwrap()
    }

    #[test]
    fn only_the_named_parts_are_built_and_paths_stay() {
        let text = r#"{"kind": "K", "skipped": {"deep": [1, 2, {"x": null}]},
            "items": [{"name": "a", "image": "i", "tags": ["t", 1.5, -2, true, null]}, {"image": "j"}],
            "meta": {"name": "m", "labels": {"l": "v"}}}"#;
        assert_eq!(
            pruned(text),
            json!({"kind": "K",
                "items": [{"name": "a", "tags": ["t", 1.5, -2, true, null]}, {}],
                "meta": {"name": "m"}})
        );
    }

    #[test]
    fn unexpected_types_are_built_whole_and_repeated_keys_keep_the_last() {
        let text = r#"{"items": {"name": "not a list", "image": "kept"}, "meta": ["x", {"y": 1}],
            "kind": "first", "ki\u006ed": "escaped, and last"}"#;
        assert_eq!(
            pruned(text),
            json!({"items": {"name": "not a list", "image": "kept"}, "meta": ["x", {"y": 1}],
                "kind": "escaped, and last"})
        );
    }

    #[test]
    fn a_parse_builds_at_most_its_budget_of_values_and_skipped_parts_are_free() {
        let many = |key: &str, count: usize| {
            format!(
                r#"{{"kind": "K", "{key}": [{}]}}"#,
                vec!["{\"name\": \"v\"}"; count].join(",")
            )
        };
        // Each item is two values (the object and its name).
        let fits = many("items", MAX_VALUES / 2 - 2);
        assert!(
            with_value_budget(|| {
                Pruned(&DOCUMENT).deserialize(&mut serde_json::Deserializer::from_str(&fits))
            })
            .is_ok()
        );
        let over = many("items", MAX_VALUES / 2 + 1);
        let error = with_value_budget(|| {
            Pruned(&DOCUMENT).deserialize(&mut serde_json::Deserializer::from_str(&over))
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(&format!("more than {MAX_VALUES} JSON values")),
            "{error}"
        );
        // What the shape skips costs nothing, however much of it there is.
        let skipped = many("skipped", MAX_VALUES);
        assert!(
            with_value_budget(|| {
                Pruned(&DOCUMENT).deserialize(&mut serde_json::Deserializer::from_str(&skipped))
            })
            .is_ok()
        );
        // The whole shape counts too.
        let error = with_value_budget(|| {
            Pruned(&Shape::All).deserialize(&mut serde_json::Deserializer::from_str(&skipped))
        })
        .unwrap_err();
        assert!(error.to_string().contains("JSON values"), "{error}");
    }

    #[test]
    fn skipped_parts_must_still_be_json() {
        let broken = r#"{"kind": "K", "skipped": {"a": tru}}"#;
        assert!(
            Pruned(&DOCUMENT)
                .deserialize(&mut serde_json::Deserializer::from_str(broken))
                .is_err()
        );
    }
}
