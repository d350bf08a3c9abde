//! JSON from others (a store's reply, an admission review) built within a budget of values: a
//! value costs about the same as a tree whatever its size in the text, so a text of tiny values
//! (`{"a":0,"b":0,...}`) would otherwise cost twenty times its size.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::fmt;

/// What one built value costs at most as a tree, its text aside: measured worst is an object of
/// one entry (`{"a":0}`), whose map allocates a whole B-tree node of eleven slots, about 650
/// bytes for two values.
pub const BYTES_PER_VALUE: usize = 384;

/// What a tree costs at most per byte of the JSON text it is built from: `{"a":0},` is 8 bytes
/// and about 650 as a tree.
pub const TREE_BYTES_PER_TEXT_BYTE: usize = 96;

/// The most a tree of `len` bytes of JSON text, built within `max_values`, may cost.
pub fn tree_cost(len: usize, max_values: usize) -> usize {
    len.saturating_mul(TREE_BYTES_PER_TEXT_BYTE).min(
        max_values
            .saturating_mul(BYTES_PER_VALUE)
            .saturating_add(len),
    )
}

thread_local! {
    /// Values the current parse on this thread may still build, and its budget (for the error).
    /// Parses are synchronous, so the budget of the one running on this thread is the thread's.
    static BUDGET: Cell<(usize, usize)> = const { Cell::new((usize::MAX, usize::MAX)) };
}

/// Runs `parse` with a budget of `max_values` built values: a [`Bounded`] deserialization (or
/// one whose visitor calls [`spend`]) beyond it fails with an error that names the limit.
pub fn with_value_budget<T>(max_values: usize, parse: impl FnOnce() -> T) -> T {
    let before = BUDGET.replace((max_values, max_values));
    let parsed = parse();
    BUDGET.set(before);
    parsed
}

/// Counts one built value against the current parse's budget.
pub fn spend<E: serde::de::Error>() -> Result<(), E> {
    let (left, max) = BUDGET.get();
    if left == 0 {
        return Err(E::custom(format_args!("more than {max} JSON values")));
    }
    BUDGET.set((left - 1, max));
    Ok(())
}

/// A `serde_json::Value` whose every value was counted by [`spend`].
#[derive(Debug, Clone, PartialEq)]
pub struct Bounded(pub Value);

impl<'de> Deserialize<'de> for Bounded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BoundedVisitor).map(Bounded)
    }
}

struct BoundedVisitor;

impl<'de> Visitor<'de> for BoundedVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

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
        deserializer.deserialize_any(BoundedVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        spend()?;
        // NB: no capacity from the size hint: it is the sender's to choose.
        let mut array = Vec::new();
        while let Some(Bounded(value)) = seq.next_element()? {
            array.push(value);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        spend()?;
        let mut object = Map::new();
        while let Some((key, Bounded(value))) = map.next_entry::<String, Bounded>()? {
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The length of `value`'s compact JSON text, counted without building it.
pub fn encoded_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // NB: a counter never fails a write; a value that cannot be serialised counts as written.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Parses `text` as JSON, building at most `max_values` values.
pub fn from_slice_bounded(text: &[u8], max_values: usize) -> serde_json::Result<Value> {
    with_value_budget(max_values, || {
        serde_json::from_slice::<Bounded>(text).map(|b| b.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_builds_at_most_its_budget_and_the_same_tree_as_serde_json() {
        let text = r#"{"a": [1, -2, 1.5, true, null, "s"], "b": {"c": {}}, "a2": []}"#;
        assert_eq!(
            from_slice_bounded(text.as_bytes(), 100).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        // 13 values: the object, a and its 6, b, c, a2.
        assert!(from_slice_bounded(text.as_bytes(), 11).is_ok());
        let error = from_slice_bounded(text.as_bytes(), 10).unwrap_err();
        assert!(
            error.to_string().contains("more than 10 JSON values"),
            "{error}"
        );
        let dense = format!("[{}]", vec!["{}"; 100_000].join(","));
        assert!(from_slice_bounded(dense.as_bytes(), 1000).is_err());
        // The budget is the parse's own: the next one starts afresh.
        assert!(from_slice_bounded(b"[1]", 2).is_ok());
    }
}
