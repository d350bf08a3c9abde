//! Rendered files: a file's template over the fields of the secrets it names, with MiniJinja
//! (Jinja2's syntax; a small, sandboxed engine: no file or network access, bounded work).
//!
//! Every `name.field` the template uses is checked against what was read before rendering, so
//! that an error names the file and the missing field, never a value; and the engine's own
//! errors are told in our words, not with its excerpt of the template.

//! A rendering runs in a child process of the driver's own binary, under kernel limits on its
//! memory and CPU time: the engine builds strings and lists (`~`, `join`, `*`) whose size no
//! instruction count bounds, and a template in one tenant's SSI must not be able to take the
//! node's driver down. The parent checks the template and its sources first, so that its errors
//! stay precise; the child only renders.

use minijinja::{Environment, UndefinedBehavior};
use ssi_core::FileTemplate;
use ssi_vault::Secret;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// Bound on the work one rendering may do (MiniJinja's fuel: roughly one unit per instruction),
/// so that a loop in an SSI cannot occupy the driver.
const FUEL: u64 = 100_000;

/// Largest rendered file, in bytes (a volume's tmpfs is 4 MiB by default).
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// Largest input of one rendering: the template's text and its sources' fields, in bytes.
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;

/// Largest input as the child gets it, JSON-encoded: escapes may double a text's size.
const MAX_ENCODED_INPUT_BYTES: usize = 2 * MAX_INPUT_BYTES;

/// The rendering child's data segment (heap), in bytes: its input, the engine's values, the
/// output, with room to spare. What a template builds beyond it ends the child, not the driver.
pub const CHILD_MEMORY_BYTES: u64 = 32 * 1024 * 1024;

/// The rendering child's CPU time, in seconds; the parent also kills it after [`WALL_TIME`].
const CHILD_CPU_SECONDS: u64 = 2;

/// How long the parent waits for a rendering, start to end.
const WALL_TIME: Duration = Duration::from_secs(5);

/// Renderings at once, node-wide: the driver's memory budget holds this many children.
pub const RENDERS_AT_ONCE: usize = 1;

/// The first argument that makes the driver's binary the rendering child.
pub const CHILD_ARGUMENT: &str = "--render-template-child";

/// Runs renderings in children of `exe` (the driver's own binary), [`RENDERS_AT_ONCE`] at a time.
#[derive(Debug, Clone)]
pub struct Renderer {
    exe: PathBuf,
    slots: Arc<Semaphore>,
}

impl Renderer {
    /// Renders in children of `exe`, which must call [`child_main`] when given [`CHILD_ARGUMENT`].
    pub fn new(exe: impl Into<PathBuf>) -> Renderer {
        Renderer {
            exe: exe.into(),
            slots: Arc::new(Semaphore::new(RENDERS_AT_ONCE)),
        }
    }

    /// Renders in children of the running binary.
    pub fn of_this_binary() -> std::io::Result<Renderer> {
        Ok(Renderer::new(std::env::current_exe()?))
    }

    /// Renders `template` with the secrets `read` returns by path (each read before, once).
    pub async fn render<'a>(
        &self,
        template: &FileTemplate,
        read: impl Fn(&str) -> Option<&'a Secret>,
    ) -> Result<Vec<u8>, String> {
        // The slot first: the input (up to 8 MiB) is built only by the rendering that runs.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| "the driver is stopping".to_owned())?;
        let input = checked_input(template, read)?;
        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg(CHILD_ARGUMENT)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            format!("the template could not be rendered: cannot start the renderer: {e}")
        })?;
        let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the template could not be rendered: the renderer has no pipes".into());
        };
        let exchange = async {
            let write = async {
                // A child that dies early closes its end: its exit status tells why.
                let _ = stdin.write_all(&input).await;
                drop(stdin);
            };
            let (mut output, mut problem) = (Vec::new(), Vec::new());
            let mut stdout = (&mut stdout).take(MAX_RENDERED_BYTES as u64 + 1);
            let mut stderr = (&mut stderr).take(4096);
            let read_output = stdout.read_to_end(&mut output);
            let read_problem = stderr.read_to_end(&mut problem);
            let ((), read, _) = tokio::join!(write, read_output, read_problem);
            read.map_err(|e| format!("the template could not be rendered: {e}"))?;
            let status = child
                .wait()
                .await
                .map_err(|e| format!("the template could not be rendered: {e}"))?;
            Ok::<_, String>((status, output, problem))
        };
        let (status, output, problem) = match tokio::time::timeout(WALL_TIME, exchange).await {
            Ok(done) => done?,
            Err(_) => {
                return Err(format!(
                    "the template cannot be rendered: it takes longer than {WALL_TIME:?}"
                ));
            }
        };
        verdict(status, output, &problem)
    }
}

/// The unprivileged user and group the child runs as when the driver is root.
const NOBODY: u32 = 65534;

/// What the child's end means.
fn verdict(
    status: std::process::ExitStatus,
    output: Vec<u8>,
    problem: &[u8],
) -> Result<Vec<u8>, String> {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) if output.len() <= MAX_RENDERED_BYTES => Ok(output),
        (Some(0), _) => Err(too_large()),
        // The child's own words (see child_main): never a value.
        (Some(CHILD_REFUSED), _) => Err(String::from_utf8_lossy(problem).trim().to_owned()),
        (_, Some(signal)) if signal == nix::libc::SIGXCPU || signal == nix::libc::SIGKILL => {
            Err(format!(
                "the template cannot be rendered: it needs more than {CHILD_CPU_SECONDS} s of CPU time"
            ))
        }
        // An allocation the limit refused aborts the child (Rust's out-of-memory handler).
        _ if String::from_utf8_lossy(problem).contains("memory allocation") => Err(format!(
            "the template cannot be rendered: it builds more than {} MiB of text or lists",
            CHILD_MEMORY_BYTES / (1024 * 1024)
        )),
        _ => Err(format!(
            "the template cannot be rendered: the renderer ended with {status}"
        )),
    }
}

fn too_large() -> String {
    format!("the rendered file is larger than {MAX_RENDERED_BYTES} bytes")
}

/// The child's exit code when it refused the template; its stderr says why.
const CHILD_REFUSED: i32 = 3;

/// What the parent sends the child: the template, its sources' fields, and their paths (for
/// messages).
#[derive(serde::Serialize)]
struct Input<'a> {
    text: &'a str,
    sources: BTreeMap<&'a str, BTreeMap<&'a str, String>>,
    paths: &'a BTreeMap<String, String>,
}

/// [`Input`] as the child reads it.
#[derive(serde::Deserialize)]
struct ChildInput {
    text: String,
    sources: BTreeMap<String, BTreeMap<String, String>>,
    paths: BTreeMap<String, String>,
}

/// Checks what was read for `template` (every field of its sources must be text, all of it at
/// most [`MAX_INPUT_BYTES`]) and encodes the child's input. The template itself is not even
/// compiled here: MiniJinja folds constants as it compiles (`"x" * 100000000` is a 100 MB string
/// before any rendering), so that happens in the child too. Errors name fields, never values.
fn checked_input<'s>(
    template: &FileTemplate,
    read: impl Fn(&str) -> Option<&'s Secret>,
) -> Result<Vec<u8>, String> {
    let too_large = || {
        format!(
            "the template and its sources' fields are larger than {} MiB together",
            MAX_INPUT_BYTES / (1024 * 1024)
        )
    };
    let mut size = template.text.len();
    let mut sources: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    for (name, path) in &template.sources {
        let secret = read(path).ok_or_else(|| format!("secret {path} was not read"))?;
        let mut fields = BTreeMap::new();
        for (key, value) in secret.fields() {
            size += key.len() + value.expose().len();
            if size > MAX_INPUT_BYTES {
                return Err(too_large());
            }
            let text = std::str::from_utf8(value.expose()).map_err(|_| {
                format!("{name}.{key} ({path}) is not text; a template renders text")
            })?;
            fields.insert(key, text.to_owned());
        }
        sources.insert(name.as_str(), fields);
    }

    let input = Input {
        text: &template.text,
        sources,
        paths: &template.sources,
    };
    // Escapes may make the encoded input several times larger than its parts: measured before
    // it is built.
    if ssi_core::json::encoded_len(&input) > MAX_ENCODED_INPUT_BYTES {
        return Err(too_large());
    }
    serde_json::to_vec(&input).map_err(|e| format!("the template could not be rendered: {e}"))
}

/// Keys named in an error, at most [`KEYS_SHOWN`] of them: a secret may have many.
fn keys_listed<'k>(keys: impl ExactSizeIterator<Item = &'k str>) -> String {
    let count = keys.len();
    let shown: Vec<String> = keys
        .take(KEYS_SHOWN)
        .map(|k| format!("{:?}", shorten(k)))
        .collect();
    if count > KEYS_SHOWN {
        format!("{count} keys, among them: {}", shown.join(", "))
    } else {
        format!("keys: {}", shown.join(", "))
    }
}

/// At most this many keys are named in an error.
const KEYS_SHOWN: usize = 20;

/// A key as errors show it: its first 64 characters.
fn shorten(key: &str) -> &str {
    key.char_indices().nth(64).map_or(key, |(at, _)| &key[..at])
}

/// The engine as both sides configure it.
fn environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_fuel(Some(FUEL));
    // A file ends as its template does: a .env keeps its last newline.
    environment.set_keep_trailing_newline(true);
    environment
}

/// Renders a checked input; the output goes through a writer that refuses more than
/// [`MAX_RENDERED_BYTES`], so that not even the child holds a larger file.
fn render_input(input: &[u8], out: &mut impl Write) -> Result<(), String> {
    let input: ChildInput = serde_json::from_slice(input)
        .map_err(|_| "the template could not be rendered: its input is not ours".to_owned())?;
    let environment = environment();
    let compiled = environment
        .template_from_str(&input.text)
        .map_err(|e| format!("the template does not parse: {}{}", e.kind(), at_line(&e)))?;
    // Every `name.field` it uses must exist, so that an error names the field, never a value.
    for used in compiled.undeclared_variables(true) {
        let (name, field) = used.split_once('.').unwrap_or((used.as_str(), ""));
        // The engine's own functions (`range`, ...) are no sources.
        if environment.globals().any(|(global, _)| global == name) {
            continue;
        }
        let Some(fields) = input.sources.get(name) else {
            return Err(format!(
                "the template uses {name}, which is not among its sources ({})",
                input.paths.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        if !field.is_empty() && !fields.contains_key(field) {
            let path = input.paths.get(name).map_or("", String::as_str);
            return Err(format!(
                "the template uses {name}.{field}, which secret {path} does not have ({})",
                keys_listed(fields.keys().map(String::as_str))
            ));
        }
    }
    let mut capped = Capped {
        out,
        left: MAX_RENDERED_BYTES,
        over: false,
    };
    match compiled.render_captured_to(&input.sources, &mut capped) {
        Ok(_) => Ok(()),
        Err(_) if capped.over => Err(too_large()),
        Err(e) => Err(format!(
            "the template cannot be rendered: {}{}",
            e.kind(),
            at_line(&e)
        )),
    }
}

/// A writer that takes at most `left` more bytes.
struct Capped<'w, W> {
    out: &'w mut W,
    left: usize,
    over: bool,
}

impl<W: Write> Write for Capped<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() > self.left {
            self.over = true;
            return Err(std::io::Error::other("the rendered file is too large"));
        }
        self.left -= bytes.len();
        self.out.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The rendering child: limits itself, reads its input from stdin, writes the file to stdout
/// (exit 0) or what is wrong to stderr (exit [`CHILD_REFUSED`]). Called by the driver's `main`
/// when its first argument is [`CHILD_ARGUMENT`], before anything else starts.
pub fn child_main() -> ! {
    use nix::sys::resource::{Resource, setrlimit};
    // No core file, whatever ends the child: it would hold the template's secrets.
    let limited = setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .and_then(|()| nix::sys::prctl::set_dumpable(false))
        .and_then(|()| {
            setrlimit(
                Resource::RLIMIT_DATA,
                CHILD_MEMORY_BYTES,
                CHILD_MEMORY_BYTES,
            )
        })
        .and_then(|()| {
            setrlimit(
                Resource::RLIMIT_CPU,
                CHILD_CPU_SECONDS,
                CHILD_CPU_SECONDS + 1,
            )
        })
        // The child needs nothing of root's: it reads a pipe and writes one. It drops root itself,
        // after the exec, so that its binary need not be readable by anyone else.
        .and_then(|()| {
            use nix::unistd::{Gid, Uid, geteuid, setgid, setgroups, setuid};
            if geteuid().is_root() {
                setgroups(&[])?;
                setgid(Gid::from_raw(NOBODY))?;
                setuid(Uid::from_raw(NOBODY))?;
            }
            Ok(())
        });
    if limited.is_err() {
        eprintln!(
            "the template could not be rendered: the renderer cannot limit itself or drop root"
        );
        std::process::exit(CHILD_REFUSED);
    }
    let mut input = Vec::new();
    if std::io::stdin()
        .take(MAX_ENCODED_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut input)
        .is_err()
        || input.len() > MAX_ENCODED_INPUT_BYTES
    {
        eprintln!("the template could not be rendered: its input is not ours");
        std::process::exit(CHILD_REFUSED);
    }
    let mut output = Vec::new();
    match render_input(&input, &mut output) {
        Ok(()) => {
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(&output)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                std::process::exit(CHILD_REFUSED);
            }
            std::process::exit(0)
        }
        Err(problem) => {
            eprintln!("{problem}");
            std::process::exit(CHILD_REFUSED)
        }
    }
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

    /// What a child renders, here in the test's process.
    fn render<'a>(
        template: &FileTemplate,
        read: impl Fn(&str) -> Option<&'a Secret>,
    ) -> Result<Vec<u8>, String> {
        let input = checked_input(template, read)?;
        let mut output = Vec::new();
        render_input(&input, &mut output)?;
        Ok(output)
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
