use crate::Error;
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// One secret as read from the store: its fields plus the metadata rotation needs.
///
/// `Debug` prints the path and the key names, never a value.
pub struct Secret {
    path: String,
    fields: Map<String, Value>,
    /// KV v2 version of the data (`data.metadata.version`); `None` for other engines.
    pub version: Option<u64>,
    /// Lease of dynamic secrets; `None` when the store gives no lease.
    pub lease_duration: Option<Duration>,
    /// Id of that lease, for renewing it; a credential, so never logged.
    pub lease_id: Option<String>,
    /// Whether the store lets the lease be renewed.
    pub renewable: bool,
}

/// One value of a secret. Text is kept as its UTF-8 bytes; any other JSON value (number, bool,
/// object, array) as its compact JSON text, which is what a file or an env var can hold.
#[derive(Clone)]
pub struct SecretValue(SecretSlice<u8>);

impl SecretValue {
    /// The raw bytes. Keep them out of logs and error messages.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl From<&Value> for SecretValue {
    fn from(value: &Value) -> Self {
        let bytes = match value {
            Value::String(s) => s.as_bytes().to_vec(),
            other => other.to_string().into_bytes(),
        };
        SecretValue(bytes.into())
    }
}

impl Secret {
    /// Interprets the body of a successful `GET /v1/<path>`.
    ///
    /// NB: KV v2 wraps the user's data as `data.data` beside `data.metadata`; KV v1 and other
    /// engines return the fields as `data` directly. A v2 response is recognised by exactly those
    /// two members with `metadata` an object, which a v1 secret would only match if the user had
    /// written a secret shaped like a v2 envelope.
    pub fn from_response(path: &str, body: Value) -> Result<Secret, String> {
        let Value::Object(mut body) = body else {
            return Err("the body is not a JSON object".into());
        };
        let lease_duration = body
            .get("lease_duration")
            .and_then(Value::as_u64)
            .filter(|&s| s > 0)
            .map(crate::ttl_from_secs);
        let lease_id = body
            .get("lease_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let renewable = body
            .get("renewable")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut data = match body.remove("data") {
            Some(Value::Object(data)) => data,
            Some(Value::Null) | None => return Err("the response has no data".into()),
            Some(_) => return Err("the response's data is not an object".into()),
        };

        let is_kv2 = data.len() == 2
            && data.get("metadata").is_some_and(Value::is_object)
            && data.contains_key("data");
        let (fields, version) = if is_kv2 {
            let version = data["metadata"].get("version").and_then(Value::as_u64);
            // Taken, not copied: a secret's fields may be megabytes.
            match data.remove("data") {
                Some(Value::Object(fields)) => (fields, version),
                // A destroyed or deleted KV v2 version has `data: null` beside its metadata.
                Some(Value::Null) => {
                    return Err("this secret version is deleted or destroyed".into());
                }
                _ => return Err("the KV v2 data is not an object".into()),
            }
        } else {
            (data, None)
        };
        Ok(Secret {
            path: path.to_owned(),
            fields,
            version,
            lease_duration,
            lease_id,
            renewable,
        })
    }

    /// The store path this secret was read from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The value of `key`, or an error naming the path, the key and the keys that do exist.
    pub fn value(&self, key: &str) -> Result<SecretValue, Error> {
        self.fields
            .get(key)
            .map(SecretValue::from)
            .ok_or_else(|| Error::MissingKey {
                path: self.path.clone(),
                key: key.to_owned(),
                available: self.keys().map(str::to_owned).collect(),
            })
    }

    /// About what the secret costs in memory: its text, and a tree node for every value (see
    /// [`ssi_core::json::BYTES_PER_VALUE`]). What a volume may hold at once is counted with it.
    pub fn retained_bytes(&self) -> usize {
        self.path.len()
            + self
                .fields
                .iter()
                .map(|(key, value)| key.len() + cost(value))
                .sum::<usize>()
    }

    /// The length of [`Secret::value_bytes`] of `key` (0 if there is none), known before it is
    /// copied: a string's bytes, any other value's JSON text (whose escapes may make it several
    /// times longer than what it holds).
    pub fn value_cost(&self, key: &str) -> usize {
        match self.fields.get(key) {
            None => 0,
            Some(Value::String(text)) => text.len(),
            Some(other) => ssi_core::json::encoded_len(other),
        }
    }

    /// The value of `key` as [`SecretValue::expose`] gives it, copied once into a plain buffer
    /// (a file's content); an error as [`Secret::value`] gives it.
    pub fn value_bytes(&self, key: &str) -> Result<Vec<u8>, Error> {
        match self.fields.get(key) {
            Some(Value::String(text)) => Ok(text.as_bytes().to_vec()),
            Some(other) => Ok(other.to_string().into_bytes()),
            None => self.value(key).map(|value| value.expose().to_vec()),
        }
    }

    /// The names of the secret's fields.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// Every field, for callers that import a whole secret (the injector's `env-from-path`).
    pub fn fields(&self) -> impl Iterator<Item = (&str, SecretValue)> {
        self.fields
            .iter()
            .map(|(k, v)| (k.as_str(), SecretValue::from(v)))
    }
}

/// About what `value` costs as a tree.
fn cost(value: &Value) -> usize {
    ssi_core::json::BYTES_PER_VALUE
        + match value {
            Value::String(text) => text.len(),
            Value::Array(items) => items.iter().map(cost).sum(),
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + cost(v)).sum(),
            _ => 0,
        }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("path", &self.path)
            .field("keys", &self.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .field("lease_duration", &self.lease_duration)
            .field("renewable", &self.renewable)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_a_secret_costs_is_known_before_a_value_is_copied() {
        let body = json!({"data": {"big": "x".repeat(100_000), "n": 1, "list": [1, 2]}});
        let secret = Secret::from_response("secret/s", body).unwrap();
        assert_eq!(secret.value_cost("big"), 100_000);
        assert_eq!(secret.value_bytes("big").unwrap().len(), 100_000);
        assert_eq!(secret.value_cost("missing"), 0);
        assert!(secret.value_bytes("missing").is_err());
        // A JSON value is its text, escapes included: six bytes for each control character.
        let escaped = json!({"data": {"o": {"s": "\u{1}".repeat(1000)}}});
        let escaped = Secret::from_response("secret/e", escaped).unwrap();
        let text = escaped.value_bytes("o").unwrap();
        assert_eq!(escaped.value_cost("o"), text.len());
        assert!(text.len() > 6000, "{}", text.len());
        assert_eq!(text, escaped.value("o").unwrap().expose());
        let total = secret.retained_bytes();
        assert!(
            total > secret.value_cost("big") + secret.value_cost("list"),
            "{total}"
        );
        assert!(total < 100_000 + 4096, "{total}");
    }

    #[test]
    fn unwraps_kv2_data_and_version() {
        let body = json!({
            "lease_duration": 0, "lease_id": "", "renewable": false,
            "data": {"data": {"password": "s3cret", "port": 5432},
                     "metadata": {"version": 3, "created_time": "2026-01-01T00:00:00Z"}}
        });
        let secret = Secret::from_response("secret/data/app", body).expect("parses");
        assert_eq!(secret.version, Some(3));
        assert_eq!(secret.value("password").expect("key").expose(), b"s3cret");
        assert_eq!(secret.value("port").expect("key").expose(), b"5432");
        assert_eq!(secret.lease_duration, None);
        assert_eq!(secret.lease_id, None);
    }

    #[test]
    fn passes_kv1_data_as_is() {
        let body =
            json!({"lease_duration": 2764800, "data": {"password": "v1", "nested": {"a": 1}}});
        let secret = Secret::from_response("kv/app", body).expect("parses");
        assert_eq!(secret.version, None);
        assert_eq!(secret.lease_duration, Some(Duration::from_secs(2764800)));
        assert_eq!(secret.value("password").expect("key").expose(), b"v1");
        assert_eq!(secret.value("nested").expect("key").expose(), br#"{"a":1}"#);
    }

    #[test]
    fn kv1_secret_with_a_data_key_is_not_mistaken_for_kv2() {
        let body = json!({"data": {"data": "x", "other": "y"}});
        let secret = Secret::from_response("kv/app", body).expect("parses");
        assert_eq!(secret.value("data").expect("key").expose(), b"x");
    }

    #[test]
    fn deleted_kv2_version_is_an_error() {
        let body =
            json!({"data": {"data": null, "metadata": {"version": 2, "deletion_time": "x"}}});
        let err = Secret::from_response("secret/data/app", body).expect_err("deleted");
        assert!(err.contains("deleted"), "{err}");
    }

    #[test]
    fn debug_shows_keys_but_never_values() {
        let body = json!({"data": {"data": {"password": "hunter2"}, "metadata": {"version": 1}}});
        let secret = Secret::from_response("secret/data/app", body).expect("parses");
        let debug = format!("{secret:?} {:?}", secret.value("password").expect("key"));
        assert!(debug.contains("password"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn missing_key_error_names_path_key_and_alternatives() {
        let body = json!({"data": {"user": "u", "password": "p"}});
        let secret = Secret::from_response("kv/app", body).expect("parses");
        let err = secret.value("pass").expect_err("missing");
        let text = err.to_string();
        assert!(
            text.contains("kv/app") && text.contains("\"pass\"") && text.contains("password, user"),
            "{text}"
        );
        assert!(!text.contains("\"p\""), "{text}");
    }
}
