//! Templates render in a child of the driver's own binary under kernel limits: what a template
//! builds ends the child, never the driver. Runs the real `ssi-csi` binary as the child.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_core::FileTemplate;
use ssi_csi::template::{CHILD_MEMORY_BYTES, Renderer};
use ssi_vault::Secret;

fn renderer() -> Renderer {
    Renderer::new(env!("CARGO_BIN_EXE_ssi-csi"))
}

fn seed() -> Secret {
    Secret::from_response(
        "secret/data/seed",
        serde_json::json!({"data": {"data": {"seed": "s".repeat(1000), "user": "app"},
            "metadata": {"version": 1}}}),
    )
    .unwrap()
}

fn template(text: &str) -> FileTemplate {
    FileTemplate {
        sources: [("b".to_owned(), "secret/data/seed".to_owned())].into(),
        text: text.to_owned(),
    }
}

/// This process's resident set, in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_template_renders_in_a_child_and_bombs_end_only_the_child() {
    let seed = seed();
    let read = |path: &str| (path == "secret/data/seed").then_some(&seed);
    let renderer = renderer();

    let rendered = renderer
        .render(
            &template("USER={{ b.user }}\nN={{ b.seed|length }}\n"),
            read,
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8(rendered).unwrap(), "USER=app\nN=1000\n");

    let before = resident_kib();
    let memory_limit = format!("more than {} MiB", CHILD_MEMORY_BYTES / (1024 * 1024));
    for (text, expected) in [
        // Ten levels of `~`, each four times the last: 1 GB from a 1 kB value.
        (
            "{% set a = b.seed ~ b.seed ~ b.seed ~ b.seed %}{% set a = a ~ a ~ a ~ a %}\
             {% set a = a ~ a ~ a ~ a %}{% set a = a ~ a ~ a ~ a %}{% set a = a ~ a ~ a ~ a %}\
             {% set a = a ~ a ~ a ~ a %}{% set a = a ~ a ~ a ~ a %}{% set a = a ~ a ~ a ~ a %}\
             {% set a = a ~ a ~ a ~ a %}{% set a = a ~ a ~ a ~ a %}{{ a|length }}",
            memory_limit.as_str(),
        ),
        (r#"{{ ("x" * 100000000)|length }}"#, memory_limit.as_str()),
        (
            "{% set l = [b.seed] * 50000 %}{% set l = l + l + l + l %}{{ l|join(b.seed)|length }}",
            memory_limit.as_str(),
        ),
        (
            "{% for i in range(5000) %}{{ b.seed }}{% endfor %}",
            "larger than 1048576 bytes",
        ),
        ("{{ b.nope }}", "does not have"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "cannot be rendered",
        ),
    ] {
        let error = renderer.render(&template(text), read).await.unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
        assert!(!error.contains("sss"), "no value in {error}");
    }
    // What the children built stayed in them: the kernel refused their allocations past the
    // limit (the errors above say so), and none of it reached this process.
    let grown = resident_kib().saturating_sub(before);
    eprintln!("[sandbox] the parent grew by {grown} KiB over the bombs");
    assert!(grown < 8 * 1024, "the parent grew by {grown} KiB");
}
