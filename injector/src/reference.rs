//! The reference grammar of environment values (DESIGN.md 3.4):
//!
//! - a whole value `secrets-store:<path>#<key>[#<version>]`;
//! - a key containing `${.field}` is a template over the secret's fields
//!   (`secrets-store:secret/data/db#postgres://${.user}:${.password}@db:5432`);
//! - `${secrets-store:<path>#<key>[#<version>]}` anywhere inside a longer value;
//! - `>>secrets-store:<path>#<key>[#<json args>]`: a write whose answer holds the key, for
//!   engines that issue secrets (`pki/issue/<role>`); the args (a JSON object, `{}` when absent)
//!   are the body; also inside text as `${>>secrets-store:...}`;
//! - `secrets-store:login`, in `VAULT_TOKEN` only: the store token the injector logged in with,
//!   for applications that talk to the store themselves.
//!
//! This is the Deckhouse injector's grammar; of its Go-template functions (sprig, `file`,
//! `accessor`) none is implemented, and a template that calls one is refused naming it. Nothing
//! that starts with `secrets-store:` or `>>secrets-store:` reaches the application as text.
//!
//! Parsing is pure and never sees a secret value.

/// What starts a reference: a whole value with it is one, `${` followed by it opens one inside text.
pub const PREFIX: &str = "secrets-store:";
/// What starts a write reference.
pub const WRITE_PREFIX: &str = ">>secrets-store:";

/// The one variable `secrets-store:login` may fill, as in Deckhouse.
pub const LOGIN_VARIABLE: &str = "VAULT_TOKEN";

/// One secret reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Full API path below `/v1/`, e.g. `secret/data/app`.
    pub path: String,
    /// What to take from the secret.
    pub key: Key,
    /// KV v2 version; the latest when absent.
    pub version: Option<u64>,
    /// For a write (`>>`): the JSON body, in canonical form (so that equal bodies are one
    /// request).
    pub write: Option<String>,
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
    /// `secrets-store:login`: the store token.
    Login,
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
    if value == format!("{PREFIX}login") {
        return Ok(Value::Login);
    }
    if let Some(rest) = value.strip_prefix(WRITE_PREFIX) {
        return parse_write(rest).map(Value::Whole);
    }
    if let Some(rest) = value.strip_prefix(PREFIX) {
        return parse_reference(rest).map(Value::Whole);
    }
    let read_marker = format!("${{{PREFIX}");
    let write_marker = format!("${{{WRITE_PREFIX}");
    let next = |text: &str| -> Option<(usize, bool)> {
        match (text.find(&read_marker), text.find(&write_marker)) {
            (Some(read), Some(write)) => Some(if read < write {
                (read, false)
            } else {
                (write, true)
            }),
            (Some(read), None) => Some((read, false)),
            (None, Some(write)) => Some((write, true)),
            (None, None) => None,
        }
    };
    if next(value).is_none() {
        return Ok(Value::Plain);
    }
    let mut parts = Vec::new();
    let mut rest = value;
    while let Some((start, write)) = next(rest) {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_owned()));
        }
        let inner_start = start
            + if write {
                write_marker.len()
            } else {
                read_marker.len()
            };
        let end = closing_brace(&rest[inner_start..]).ok_or_else(|| {
            format!("a reference opened with ${{{PREFIX} is never closed with }}")
        })?;
        let inner = &rest[inner_start..inner_start + end];
        let reference = if write {
            parse_write(inner)?
        } else {
            parse_reference(inner)?
        };
        parts.push(Part::Reference(reference));
        rest = &rest[inner_start + end + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(Value::Interpolated(parts))
}

/// The index of the `}` that closes a `${` already consumed, allowing nested `${...}` and
/// the braces of a write's JSON arguments.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, byte) in text.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
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
    // The injector's token is the pod's own, but a value read from auth/token/lookup-self would
    // put it in the app's environment.
    if let Some(why) = ssi_core::names::refused_read(path.trim_matches('/')) {
        return Err(format!("the reference to {path} {why}"));
    }
    Ok(Reference {
        path: path.to_owned(),
        key: parse_key(key)?,
        version,
        write: None,
    })
}

/// `<path>#<key>[#<json args>]` after `>>secrets-store:`.
fn parse_write(text: &str) -> Result<Reference, String> {
    let usage = "write >>secrets-store:<path>#<key>#<json object>, e.g. \
                 >>secrets-store:pki/issue/web#certificate#{\"common_name\":\"web.example.com\"}";
    let mut pieces = text.splitn(3, '#');
    let path = pieces.next().unwrap_or_default();
    let key = pieces.next().unwrap_or_default();
    let args = pieces.next().unwrap_or("{}");
    if path.is_empty() || key.is_empty() {
        return Err(format!(
            "the write reference needs a path and a key; {usage}"
        ));
    }
    // The store's own control plane is no place for an env value to write to: a pod whose
    // ConfigMap someone else edits must not create tokens or change policies as the pod.
    if let Some(prefix) = ssi_core::names::management_prefix(path.trim_matches('/')) {
        return Err(format!(
            "writes under {prefix} are refused: that part of the store manages it (tokens, \
             policies, mounts), it does not issue secrets; {usage}"
        ));
    }
    let body: serde_json::Value = serde_json::from_str(args)
        .ok()
        .filter(serde_json::Value::is_object)
        .ok_or_else(|| {
            format!("the arguments of the write to {path} are not a JSON object; {usage}")
        })?;
    Ok(Reference {
        path: path.to_owned(),
        key: parse_key(key)?,
        version: None,
        write: Some(body.to_string()),
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
        let inner = &after[..end];
        // Go's templates allow spaces inside the braces: `${ .password }`.
        let field = inner
            .trim()
            .strip_prefix('.')
            .filter(|f| !f.is_empty() && !f.contains(|c: char| c.is_whitespace() || c == '|'))
            .ok_or_else(|| match template_function(inner) {
                Some(function) => format!(
                    "template function {function:?} is not supported (Deckhouse's template \
                     functions are not implemented here); write ${{.<field>}} and transform the \
                     value in the application"
                ),
                None => format!(
                    "template field ${{{inner}}} must name a field of the secret as ${{.<field>}} \
                     (${{.{}}}?)",
                    inner.trim().trim_start_matches('.')
                ),
            })?;
        parts.push(TemplatePart::Field(field.to_owned()));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_owned()));
    }
    Ok(Key::Template(parts))
}

/// The function a Go-template action calls, if any: `.password | b64enc` calls `b64enc`,
/// `file "/x"` calls `file`.
/// A lone word (`${password}`) is taken for a field written without its dot, not a call.
fn template_function(action: &str) -> Option<String> {
    let action = action.trim();
    if !action.contains(|c: char| c.is_whitespace() || c == '|') {
        return None;
    }
    let call = action.rsplit('|').next().unwrap_or(action).trim();
    let name = call.split_whitespace().next()?;
    (!name.starts_with('.') && !name.starts_with('$')).then(|| name.chars().take(40).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(path: &str, key: &str, version: Option<u64>) -> Reference {
        Reference {
            path: path.into(),
            key: Key::Field(key.into()),
            version,
            write: None,
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
                    write: None,
                }),
                Part::Text("!".into()),
            ])
        );
    }

    #[test]
    fn reads_of_the_store_token_are_refused() {
        for text in [
            "secrets-store:auth/token/lookup-self#id",
            "secrets-store:/auth/token/lookup-self#id",
            "secrets-store:team/auth/token/lookup-self#id",
            "secrets-store:sys/wrapping/lookup#x",
        ] {
            let error = parse_value(text).expect_err(text);
            assert!(
                error.contains("read secrets from a secret engine"),
                "{error}"
            );
        }
        assert!(parse_value("secrets-store:secret/data/auth#token").is_ok());
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

    #[test]
    fn deckhouse_writes_login_and_unsupported_functions() {
        // A write, its JSON args in canonical form, and `{}` when there are none.
        let Ok(Value::Whole(write)) = parse_value(
            r#">>secrets-store:pki/issue/web#certificate#{"ttl": "1h", "common_name": "web.example.com"}"#,
        ) else {
            panic!("a write reference")
        };
        assert_eq!(write.path, "pki/issue/web");
        assert_eq!(write.key, Key::Field("certificate".into()));
        assert_eq!(
            write.write.as_deref(),
            Some(r#"{"common_name":"web.example.com","ttl":"1h"}"#)
        );
        let Ok(Value::Whole(bare)) = parse_value(">>secrets-store:database/creds/app#username")
        else {
            panic!("a write without args")
        };
        assert_eq!(bare.write.as_deref(), Some("{}"));
        // Inside text too.
        let Ok(Value::Interpolated(parts)) =
            parse_value("cert=${>>secrets-store:pki/issue/web#certificate#{}}")
        else {
            panic!("an interpolated write")
        };
        assert!(matches!(&parts[1], Part::Reference(r) if r.write.is_some()));
        assert_eq!(parse_value("secrets-store:login"), Ok(Value::Login));
        // Go's templates allow spaces inside the braces.
        let Ok(Value::Whole(spaced)) = parse_value("secrets-store:secret/data/db#${ .password }")
        else {
            panic!("a template with spaces")
        };
        assert_eq!(
            spaced.key,
            Key::Template(vec![TemplatePart::Field("password".into())])
        );

        // Refusals name what is wrong; nothing with the prefix passes as text.
        for (value, expected) in [
            (
                ">>secrets-store:pki/issue/web#certificate#not json",
                "not a JSON object",
            ),
            (
                ">>secrets-store:pki/issue/web#certificate#[1]",
                "not a JSON object",
            ),
            (">>secrets-store:pki/issue/web", "needs a path and a key"),
            (
                ">>secrets-store:auth/token/create#client_token",
                "writes under auth/ are refused",
            ),
            (
                ">>secrets-store:sys/policies/acl/x#policy#{}",
                "writes under sys/ are refused",
            ),
            (
                "secrets-store:secret/data/db#${ .password | b64enc }",
                "template function \"b64enc\"",
            ),
            (
                "secrets-store:secret/data/db#${ file \"/etc/passwd\" }",
                "template function \"file\"",
            ),
            (
                "secrets-store:secret/data/db#${ accessor \"auth/x\" }",
                "template function \"accessor\"",
            ),
            (
                "secrets-store:secret/data/db#${password}",
                "must name a field",
            ),
        ] {
            let error = parse_value(value).unwrap_err();
            assert!(error.contains(expected), "{value}: {error}");
        }
    }
}
