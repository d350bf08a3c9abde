//! Rendered files: a file's template over the fields of the secrets it names, with MiniJinja
//! (Jinja2's syntax; a small, sandboxed engine: no file or network access, bounded work).
//!
//! Every `name.field` the template uses is checked against what was read before rendering, so
//! that an error names the file and the missing field, never a value; and the engine's own
//! errors are told in our words, not with its excerpt of the template.

use minijinja::{Environment, UndefinedBehavior, Value};
use ssi_core::FileTemplate;
use ssi_vault::Secret;
use std::collections::BTreeMap;

/// Bound on the work one rendering may do (MiniJinja's fuel: roughly one unit per instruction),
/// so that a loop in an SSI cannot occupy the driver.
const FUEL: u64 = 100_000;

/// Largest rendered file, in bytes (a volume's tmpfs is 4 MiB by default).
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// Renders `template` with the secrets `read` returns by path (each read before, once).
pub fn render<'a>(
    template: &FileTemplate,
    read: impl Fn(&str) -> Option<&'a Secret>,
) -> Result<Vec<u8>, String> {
    let mut context: BTreeMap<&str, BTreeMap<String, Value>> = BTreeMap::new();
    for (name, path) in &template.sources {
        let secret = read(path).ok_or_else(|| format!("secret {path} was not read"))?;
        let mut fields = BTreeMap::new();
        for (key, value) in secret.fields() {
            let text = std::str::from_utf8(value.expose()).map_err(|_| {
                format!("{name}.{key} ({path}) is not text; a template renders text")
            })?;
            fields.insert(key.to_owned(), Value::from(text));
        }
        context.insert(name.as_str(), fields);
    }

    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_fuel(Some(FUEL));
    // A file ends as its template does: a .env keeps its last newline.
    environment.set_keep_trailing_newline(true);
    let compiled = environment
        .template_from_str(&template.text)
        .map_err(|e| format!("the template does not parse: {}{}", e.kind(), at_line(&e)))?;
    for used in compiled.undeclared_variables(true) {
        let (name, field) = used.split_once('.').unwrap_or((used.as_str(), ""));
        // The engine's own functions (`range`, ...) are no sources.
        if environment.globals().any(|(global, _)| global == name) {
            continue;
        }
        let Some(fields) = context.get(name) else {
            return Err(format!(
                "the template uses {name}, which is not among its sources ({})",
                template
                    .sources
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if !field.is_empty() && !fields.contains_key(field) {
            let path = &template.sources[name];
            return Err(format!(
                "the template uses {name}.{field}, which secret {path} does not have (keys: {})",
                fields
                    .keys()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let rendered = compiled.render(&context).map_err(|e| {
        format!(
            "the template cannot be rendered: {}{}",
            e.kind(),
            at_line(&e)
        )
    })?;
    if rendered.len() > MAX_RENDERED_BYTES {
        return Err(format!(
            "the rendered file is larger than {MAX_RENDERED_BYTES} bytes"
        ));
    }
    Ok(rendered.into_bytes())
}

/// ` (line N)`, when the engine knows the line of the template (the SSI's text, not a secret).
fn at_line(error: &minijinja::Error) -> String {
    error
        .line()
        .map_or_else(String::new, |line| format!(" (line {line})"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn secret(path: &str, data: serde_json::Value) -> Secret {
        Secret::from_response(
            path,
            json!({"data": {"data": data, "metadata": {"version": 1}}}),
        )
        .unwrap()
    }

    fn template(sources: &[(&str, &str)], text: &str) -> FileTemplate {
        FileTemplate {
            sources: sources
                .iter()
                .map(|(name, path)| ((*name).to_owned(), (*path).to_owned()))
                .collect(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn a_dotenv_from_two_secrets_and_errors_that_name_fields_never_values() {
        let db = secret(
            "secret/data/db",
            json!({"username": "app", "password": "s3cret"}),
        );
        let api = secret("secret/data/api", json!({"key": "k-123"}));
        let read = |path: &str| match path {
            "secret/data/db" => Some(&db),
            "secret/data/api" => Some(&api),
            _ => None,
        };
        let sources = [("db", "secret/data/db"), ("api", "secret/data/api")];
        let rendered = render(
            &template(
                &sources,
                "DB_URL=postgres://{{ db.username }}:{{ db.password }}@db/app\nAPI_KEY={{ api.key }}\n",
            ),
            read,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(rendered).unwrap(),
            "DB_URL=postgres://app:s3cret@db/app\nAPI_KEY=k-123\n"
        );

        for (text, expected) in [
            (
                "{{ db.pasword }}",
                "uses db.pasword, which secret secret/data/db does not have (keys: \"password\", \"username\")",
            ),
            (
                "{{ cache.url }}",
                "uses cache, which is not among its sources (api, db)",
            ),
            ("{{ db.username ", "does not parse"),
            (
                "{% for i in range(1000000) %}{{ db.password }}{% endfor %}",
                "cannot be rendered",
            ),
        ] {
            let error = render(&template(&sources, text), read).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }
}
