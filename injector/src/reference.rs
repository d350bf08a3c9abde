//! The reference grammar of environment values (DESIGN.md 3.4):
//!
//! - a whole value `secrets-store:<path>#<key>[#<version>]`;
//! - a key containing `${.field}` is a template over the secret's fields
//!   (`secrets-store:secret/data/db#postgres://${.user}:${.password}@db:5432`);
//! - `${secrets-store:<path>#<key>[#<version>]}` anywhere inside a longer value.
//!
//! Parsing is pure and never sees a secret value.

/// What starts a reference: a whole value with it is one, `${` followed by it opens one inside text.
pub const PREFIX: &str = "secrets-store:";

/// One secret reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Full API path below `/v1/`, e.g. `secret/data/app`.
    pub path: String,
    /// What to take from the secret.
    pub key: Key,
    /// KV v2 version; the latest when absent.
    pub version: Option<u64>,
}

/// What to take from the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The value of one field.
    Field(String),
    /// Text with `${.field}` placeholders filled from the secret's fields.
    Template(Vec<TemplatePart>),
}

/// A piece of a [`Key::Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Literal text, kept as written.
    Text(String),
    /// A `${.field}` placeholder, by field name.
    Field(String),
}

/// A parsed environment value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// No reference: left exactly as it is.
    Plain,
    /// The whole value is one reference.
    Whole(Reference),
    /// References inside literal text.
    Interpolated(Vec<Part>),
}

/// A piece of a [`Value::Interpolated`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text, kept as written.
    Text(String),
    /// A `${secrets-store:...}` reference, replaced by what it resolves to.
    Reference(Reference),
}

/// Parses one environment value. `Err` says what is wrong with the reference and how to write it.
pub fn parse_value(value: &str) -> Result<Value, String> {
    if let Some(rest) = value.strip_prefix(PREFIX) {
        return parse_reference(rest).map(Value::Whole);
    }
    let marker = format!("${{{PREFIX}");
    if !value.contains(&marker) {
        return Ok(Value::Plain);
    }
    let mut parts = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find(&marker) {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_owned()));
        }
        let inner_start = start + marker.len();
        let end = closing_brace(&rest[inner_start..]).ok_or_else(|| {
            format!("a reference opened with ${{{PREFIX} is never closed with }}")
        })?;
        let inner = &rest[inner_start..inner_start + end];
        parts.push(Part::Reference(parse_reference(inner)?));
        rest = &rest[inner_start + end + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(Value::Interpolated(parts))
}

/// The index of the `}` that closes a `${` already consumed, allowing nested `${...}`.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// `<path>#<key>[#<version>]`.
fn parse_reference(text: &str) -> Result<Reference, String> {
    let usage = "write secrets-store:<path>#<key> or secrets-store:<path>#<key>#<version>";
    let Some((path, rest)) = text.split_once('#') else {
        return Err(format!("the reference has no #<key>; {usage}"));
    };
    if path.is_empty() {
        return Err(format!("the reference has an empty path; {usage}"));
    }
    // NB: a template may itself contain '#'; only a last all-digit segment is a version.
    let (key, version) = match rest.rsplit_once('#') {
        Some((key, version))
            if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let version = version
                .parse()
                .map_err(|_| format!("version {version} is too large"))?;
            (key, Some(version))
        }
        _ => (rest, None),
    };
    if key.is_empty() {
        return Err(format!("the reference to {path} has an empty key; {usage}"));
    }
    Ok(Reference {
        path: path.to_owned(),
        key: parse_key(key)?,
        version,
    })
}

fn parse_key(key: &str) -> Result<Key, String> {
    if !key.contains("${") {
        return Ok(Key::Field(key.to_owned()));
    }
    let mut parts = Vec::new();
    let mut rest = key;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            parts.push(TemplatePart::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or("a template field opened with ${ is never closed with }")?;
        let field = after[..end]
            .strip_prefix('.')
            .filter(|f| !f.is_empty())
            .ok_or_else(|| {
                format!(
                    "template field ${{{}}} must name a field of the secret as ${{.<field>}}",
                    &after[..end]
                )
            })?;
        parts.push(TemplatePart::Field(field.to_owned()));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_owned()));
    }
    Ok(Key::Template(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(path: &str, key: &str, version: Option<u64>) -> Reference {
        Reference {
            path: path.into(),
            key: Key::Field(key.into()),
            version,
        }
    }

    #[test]
    fn whole_values_with_and_without_a_version() {
        assert_eq!(
            parse_value("secrets-store:secret/data/app#password"),
            Ok(Value::Whole(field("secret/data/app", "password", None)))
        );
        assert_eq!(
            parse_value("secrets-store:secret/data/app#password#3"),
            Ok(Value::Whole(field("secret/data/app", "password", Some(3))))
        );
    }

    #[test]
    fn plain_values_are_left_alone() {
        for plain in [
            "",
            "postgres://db",
            "secrets-store",
            "$HOME",
            "a ${b} c",
            "vault:x#y",
        ] {
            assert_eq!(parse_value(plain), Ok(Value::Plain), "{plain}");
        }
    }

    #[test]
    fn templates_over_fields_may_contain_hashes() {
        let parsed =
            parse_value("secrets-store:secret/data/db#postgres://${.user}:${.password}@db#main")
                .unwrap();
        let Value::Whole(reference) = parsed else {
            panic!("whole")
        };
        assert_eq!(reference.version, None);
        assert_eq!(
            reference.key,
            Key::Template(vec![
                TemplatePart::Text("postgres://".into()),
                TemplatePart::Field("user".into()),
                TemplatePart::Text(":".into()),
                TemplatePart::Field("password".into()),
                TemplatePart::Text("@db#main".into()),
            ])
        );
    }

    #[test]
    fn references_inside_longer_values() {
        let parsed =
            parse_value("user=${secrets-store:secret/data/db#user} pass=${secrets-store:secret/data/db#${.password}#2}!")
                .unwrap();
        assert_eq!(
            parsed,
            Value::Interpolated(vec![
                Part::Text("user=".into()),
                Part::Reference(field("secret/data/db", "user", None)),
                Part::Text(" pass=".into()),
                Part::Reference(Reference {
                    path: "secret/data/db".into(),
                    key: Key::Template(vec![TemplatePart::Field("password".into())]),
                    version: Some(2),
                }),
                Part::Text("!".into()),
            ])
        );
    }

    #[test]
    fn malformed_references_say_how_to_write_them() {
        for (value, expected) in [
            ("secrets-store:secret/data/app", "no #<key>"),
            ("secrets-store:#key", "empty path"),
            ("secrets-store:secret/data/app#", "empty key"),
            ("secrets-store:secret/data/app##7", "empty key"),
            ("x ${secrets-store:secret/data/app#k", "never closed"),
            ("secrets-store:secret/data/app#${user}", "${.<field>}"),
            ("secrets-store:secret/data/app#${.user", "never closed"),
            ("secrets-store:p#k#99999999999999999999999", "too large"),
        ] {
            let error = parse_value(value).unwrap_err();
            assert!(error.contains(expected), "{value}: {error}");
        }
    }
}
