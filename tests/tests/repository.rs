//! Checks on the repository itself, with no bed: what must hold for the suite to pass on a
//! machine that never ran it.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::workspace_path;
use std::path::{Path, PathBuf};

/// Host directories a test must not reach into unless it created what it touches there.
const HOST_PREFIXES: &[&str] = &[
    "/var/",
    "/run/",
    "/etc/",
    "/tmp/",
    "/home/",
    "/root/",
    "/srv/",
    "/opt/",
    "/mnt/",
    "/usr/local/",
];

/// Calls that touch the filesystem at the path on the same line.
const FILESYSTEM_CALLS: &[&str] = &[
    "Path::new(",
    "PathBuf::from(",
    "fs::",
    "File::",
    "read_dir(",
    "list_dir(",
    "canonicalize(",
    "remove_",
    "create_dir",
];

/// The marker that says why a host path in test code is fine: the bed created it, or the
/// test only names it (a container path, a rendered manifest's value, an attack refused).
const MARKER: &str = "host path:";

/// The Rust files of the workspace, `target/` aside.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The lines of `text` that are test code: all of the test crate, and in the other crates
/// whatever follows `#[cfg(test)]` (their test modules close the file).
fn test_lines(path: &Path, text: &str) -> Vec<(usize, String)> {
    let in_test_crate = path.starts_with(workspace_path("tests"));
    let mut in_tests = in_test_crate;
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        in_tests |= line.trim() == "#[cfg(test)]";
        if in_tests {
            lines.push((number + 1, line.to_owned()));
        }
    }
    lines
}

/// A test line that hands an absolute host path to the filesystem, or names one as a constant,
/// without saying why that is fine.
fn touches_a_host_path(previous: &str, line: &str) -> bool {
    let names_host_path = HOST_PREFIXES.iter().any(|prefix| {
        line.contains(&format!("\"{prefix}"))
            || line.contains(&format!("\"{}\"", prefix.trim_end_matches('/')))
    });
    if !names_host_path || line.contains(MARKER) || previous.contains(MARKER) {
        return false;
    }
    let is_constant = line.trim_start().starts_with("const ") || line.contains(" const ");
    is_constant || FILESYSTEM_CALLS.iter().any(|call| line.contains(call))
}

#[test]
fn no_test_touches_a_host_path_it_did_not_create() {
    let mut files = Vec::new();
    rust_files(&workspace_path(""), &mut files);
    assert!(
        files.len() > 50,
        "the workspace's sources were found: {}",
        files.len()
    );
    let mut found = Vec::new();
    for path in &files {
        // This file's own examples of what the check finds.
        if path.ends_with("tests/tests/repository.rs") {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let lines = test_lines(path, &text);
        let mut previous = String::new();
        for (number, line) in lines {
            if touches_a_host_path(&previous, &line) {
                found.push(format!("{}:{number}: {}", path.display(), line.trim()));
            }
            previous = line;
        }
    }
    assert!(
        found.is_empty(),
        "test code uses absolute host paths (a fresh machine may not have them, and they are not \
         the test's to change): use a tempdir or the bed's own directories, or say why with a \
         `// {MARKER} ...` comment on the line or the one before:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_host_path_check_finds_what_it_should() {
    let flagged = [
        r#"let root = Path::new("/var/lib/kubelet");"#,
        r#"std::fs::read_to_string("/etc/passwd")?;"#,
        r#"const CACHE: &str = "/var/cache/x";"#,
        r#"list_dir("/var/log/pods")"#,
    ];
    for line in flagged {
        assert!(touches_a_host_path("", line), "{line}");
    }
    let allowed = [
        r#"let root = tempfile::tempdir().unwrap();"#,
        r#"json!({"mountPath": "/mnt/secrets"})"#,
        r#"let root = Path::new("/var/lib/kubelet"); // host path: only named"#,
    ];
    for line in allowed {
        assert!(!touches_a_host_path("", line), "{line}");
    }
    assert!(!touches_a_host_path(
        "// host path: the bed's kubelet writes it",
        r#"list_dir("/var/log/pods")"#
    ));
}

/// The names of the environment variables the code reads: every clap `env = "SSI_..."` of the
/// driver and the webhook, and every `ENV_*` constant of the injector's contract.
fn variables_in_code() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut take = |text: &str, marker: &str| {
        for piece in text.split(marker).skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `ENV_PREFIX` names the family, not a variable.
            if !name.is_empty() && !name.ends_with('_') {
                names.insert(format!("SSI_{name}"));
            }
        }
    };
    for config in ["csi/src/config.rs", "webhook/src/config.rs"] {
        take(
            &std::fs::read_to_string(workspace_path(config)).unwrap(),
            "env = \"SSI_",
        );
    }
    let contract = std::fs::read_to_string(workspace_path("core/src/injector.rs")).unwrap();
    for line in contract.lines().filter(|l| l.starts_with("pub const ENV_")) {
        take(line, "= \"SSI_");
    }
    names
}

#[test]
fn every_variable_of_every_binary_is_in_the_configuration_reference_and_no_other() {
    let in_code = variables_in_code();
    assert!(
        in_code.len() > 50,
        "the code's variables were found: {in_code:?}"
    );
    let reference = std::fs::read_to_string(workspace_path("docs/configuration.md")).unwrap();
    let mut listed = std::collections::BTreeSet::new();
    for piece in reference.split("`SSI_").skip(1) {
        let name: String = piece
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        // `SSI_INJECTOR_*` and the like name a family, not a variable.
        if !name.is_empty() && !name.ends_with('_') {
            listed.insert(format!("SSI_{name}"));
        }
    }
    let missing: Vec<&String> = in_code.difference(&listed).collect();
    let unknown: Vec<&String> = listed.difference(&in_code).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md must list exactly what the code reads (regenerate its tables \
         from `ssi-csi --help` and `ssi-webhook --help`): missing {missing:?}, unknown {unknown:?}"
    );
}

#[test]
fn where_to_change_what_names_files_that_exist() {
    let architecture = std::fs::read_to_string(workspace_path("docs/architecture.md")).unwrap();
    let table = architecture
        .split("## Where to change what")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/architecture.md has its section \"Where to change what\"");
    // Every `path/with/a/slash.ext` in the table, a file of the repository.
    let named: Vec<&str> = table
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| {
            code.contains('/')
                && !code.contains(' ')
                && [".rs", ".md", ".yaml"]
                    .iter()
                    .any(|ext| code.ends_with(ext))
        })
        .collect();
    assert!(named.len() >= 10, "{named:?}");
    let missing: Vec<&&str> = named
        .iter()
        .filter(|path| !workspace_path(path).is_file())
        .collect();
    assert!(missing.is_empty(), "named but missing: {missing:?}");
}
