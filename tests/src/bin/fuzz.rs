//! A mutation fuzzer for the parsers that read what others send, run for a fixed budget by
//! `scripts/fuzz` (not in CI): AdmissionReview handling, the injector's reference grammar, the
//! CSI publish request, and the HPACK `:authority` rewrite. No coverage guidance (cargo-fuzz
//! needs a nightly compiler, which this project does not use): seeds of real inputs, then byte
//! and structure mutations from a seeded generator, so every finding replays from its seed.
//!
//! Each target checks invariants beyond "no panic": a review always gets a well-formed answer
//! with the request's uid, a published target never leaves kubelet's root, the rewriter's output
//! is never much larger than its input.
//!
//! Usage: `fuzz [seconds per target] [seed]`. Exits 1 on the first finding, printing the target,
//! the seed and the input (hex for bytes).
//!
//! `fuzz load <seconds> [seed]` sends such mutated reviews, and raw garbage, to the real
//! `ssi-webhook` binary (the one built next to this one) over HTTPS from 8 clients at once: every
//! answer must be HTTP 200 with a well-formed review, the process must live, and its peak RSS is
//! reported.

use ssi_csi::proto::{NodePublishVolumeRequest, VolumeCapability, volume_capability};
use ssi_webhook::mutate::SubpathPolicy;
use ssi_webhook::registry::Entrypoints;
use ssi_webhook::review::{Policy, review};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    if std::env::args().nth(1).as_deref() == Some("load") {
        let seconds: u64 = std::env::args()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(60);
        let seed: u64 = std::env::args()
            .nth(3)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        let result = tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(load(Duration::from_secs(seconds), seed)));
        match result {
            Ok(()) => return,
            Err(e) => {
                println!("load: FAILED: {e:#}");
                std::process::exit(1);
            }
        }
    }
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    // Panics are findings, reported below; keep the default hook from printing each one.
    std::panic::set_hook(Box::new(|_| {}));
    println!("fuzz: {seconds} s per target, seed {seed}");
    let budget = Duration::from_secs(seconds);
    let mut failed = false;
    for (name, target) in [
        (
            "admission-review",
            admission_review as fn(&mut fastrand::Rng) -> Finding,
        ),
        ("injector-reference", injector_reference),
        ("csi-publish-request", csi_publish_request),
        ("hpack-authority", hpack_authority),
        ("store-reply", store_reply),
        ("docker-config", docker_config),
    ] {
        let mut rng = fastrand::Rng::with_seed(seed);
        let started = Instant::now();
        let mut executions = 0u64;
        while started.elapsed() < budget {
            executions += 1;
            let case_seed = rng.u64(..);
            let mut case = fastrand::Rng::with_seed(case_seed);
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| target(&mut case)));
            let finding = match result {
                Ok(finding) => finding,
                Err(panic) => Some(format!(
                    "panic: {}",
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default()
                )),
            };
            if let Some(finding) = finding {
                println!(
                    "{name}: FINDING after {executions} executions (case seed {case_seed}): {finding}"
                );
                failed = true;
                break;
            }
        }
        println!(
            "{name}: {executions} executions in {:.0} s, {}",
            started.elapsed().as_secs_f64(),
            if failed {
                "stopped at a finding"
            } else {
                "no finding"
            }
        );
        if failed {
            break;
        }
    }
    std::process::exit(i32::from(failed));
}

/// What a target found wrong with one input, with enough to replay it.
type Finding = Option<String>;

const REVIEW_SEEDS: [&str; 2] = [
    include_str!("../../../webhook/tests/fixtures/deployment-create.json"),
    include_str!("../../../webhook/tests/fixtures/pod-subpath-create.json"),
];

/// Fragments a mutation splices in: the markers the reviewer looks for and JSON's odd corners.
const REVIEW_TOKENS: [&str; 16] = [
    "secrets-store.csi.deckhouse.io",
    "secrets-store.deckhouse.io/import",
    "secrets-store.deckhouse.io/role",
    "secrets-store:secret/data/x#k",
    "\"subPath\":\"a\"",
    "\"volumeAttributes\":{}",
    "null",
    "[]",
    "{}",
    "\"\\u0000\"",
    "1e999",
    "-0",
    "\"\u{10ffff}\"",
    "\"initContainers\":[{}]",
    "\"csi\":{\"driver\":\"secrets-store.csi.deckhouse.io\"}",
    "\"uid\":7",
];

fn admission_review(rng: &mut fastrand::Rng) -> Finding {
    let seed = REVIEW_SEEDS[rng.usize(..REVIEW_SEEDS.len())];
    let body = if rng.bool() {
        mutate_json(rng, seed).into_bytes()
    } else {
        mutate_bytes(rng, seed.as_bytes(), &REVIEW_TOKENS)
    };
    let policy = Policy {
        enforce: rng.u8(..4) != 0,
        subpath: if rng.bool() {
            SubpathPolicy::Deny
        } else {
            SubpathPolicy::Warn
        },
        injector: Some(ssi_webhook::inject::InjectorSettings {
            image: "registry.example.com/ssi-injector:1".into(),
            default_address: Some("https://vault.example.com:8200".into()),
            default_login: Default::default(),
            default_namespace: None,
            default_ca_pem: None,
            token_audience: String::new(),
            registry_lookup: rng.bool(),
        }),
    };
    let reviewed = review(&body, &policy, &Entrypoints::new());
    let answer: serde_json::Value =
        match serde_json::from_slice(&reviewed.response.to_review_json()) {
            Ok(answer) => answer,
            Err(e) => return Some(format!("the answer is not JSON ({e}) for {}", hex(&body))),
        };
    if !answer["response"]["allowed"].is_boolean() || answer["kind"] != "AdmissionReview" {
        return Some(format!("malformed answer {answer} for {}", hex(&body)));
    }
    // The uid must come back whenever the request had a readable one.
    if let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(uid) = request["request"]["uid"].as_str()
        && answer["response"]["uid"] != uid
    {
        return Some(format!("uid {uid:?} not echoed: {answer}"));
    }
    None
}

const REFERENCE_TOKENS: [&str; 14] = [
    "secrets-store:",
    ">>secrets-store:",
    "#",
    "/",
    "secret/data/app",
    "#version=",
    "{{",
    "}}",
    ".Data",
    "%2e%2e",
    "..",
    "\u{0}",
    "é",
    " ",
];

fn injector_reference(rng: &mut fastrand::Rng) -> Finding {
    let mut value = String::new();
    for _ in 0..rng.usize(0..12) {
        if rng.u8(..4) == 0 {
            value.push(rng.char(..));
        } else {
            value.push_str(REFERENCE_TOKENS[rng.usize(..REFERENCE_TOKENS.len())]);
        }
    }
    match ssi_injector::reference::parse_value(&value) {
        // A refusal must not be a novel: it names what is wrong, bounded.
        Err(message) if message.len() > 4096 + value.len() => {
            Some(format!("a {}-byte error for {value:?}", message.len()))
        }
        _ => None,
    }
}

const CONTEXT_TOKENS: [&str; 12] = [
    "python-backend",
    "my-namespace1",
    "backend-sa",
    "uid-1",
    "../",
    "/",
    "..",
    "{\"\":{\"token\":\"a.b.c\"}}",
    "{\"\":{\"token\":",
    "csi.storage.k8s.io/",
    "\u{0}",
    "%",
];

/// A kubelet root of the fuzzer's own: the host's /var/lib/kubelet may not exist (and is not ours).
#[allow(clippy::expect_used)] // The fuzzer cannot run without a directory of its own.
fn fuzz_kubelet_root() -> &'static Path {
    static ROOT: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| tempfile::tempdir().expect("a temporary kubelet root"))
        .path()
}

fn csi_publish_request(rng: &mut fastrand::Rng) -> Finding {
    let root = fuzz_kubelet_root();
    let piece = |rng: &mut fastrand::Rng| {
        let mut text = String::new();
        for _ in 0..rng.usize(0..4) {
            text.push_str(CONTEXT_TOKENS[rng.usize(..CONTEXT_TOKENS.len())]);
        }
        text
    };
    let keys = [
        "secretsStoreImport",
        "csi.storage.k8s.io/pod.name",
        "csi.storage.k8s.io/pod.namespace",
        "csi.storage.k8s.io/pod.uid",
        "csi.storage.k8s.io/serviceAccount.name",
        "csi.storage.k8s.io/serviceAccount.tokens",
    ];
    let mut context = HashMap::new();
    for key in keys {
        if rng.u8(..8) != 0 {
            context.insert(key.to_owned(), piece(rng));
        }
    }
    let target = format!(
        "{}/pods/{}/volumes/kubernetes.io~csi/{}/mount",
        root.display(),
        piece(rng),
        piece(rng)
    );
    let request = NodePublishVolumeRequest {
        volume_id: piece(rng),
        target_path: target,
        volume_capability: Some(VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(Default::default())),
            access_mode: None,
        }),
        readonly: rng.bool(),
        volume_context: context,
        ..Default::default()
    };
    match ssi_csi::request::parse(&request, root) {
        Ok(parsed) if !parsed.record.target_path.starts_with(root) => Some(format!(
            "target {} accepted outside {}",
            parsed.record.target_path.display(),
            root.display()
        )),
        Ok(parsed)
            if parsed
                .record
                .target_path
                .components()
                .any(|c| c.as_os_str() == "..") =>
        {
            Some(format!(
                "target {} accepted with '..'",
                parsed.record.target_path.display()
            ))
        }
        _ => None,
    }
}

/// An HTTP/2 client stream as kubelet's registration client sends it: the preface, SETTINGS,
/// and a HEADERS frame whose `:authority` is the socket path.
fn h2_seed() -> Vec<u8> {
    let mut encoder = loona_hpack::Encoder::new();
    let block = encoder.encode(vec![
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (
            b":authority",
            b"/var/lib/kubelet/plugins_registry/x-reg.sock",
        ),
        (b":path", b"/pluginregistration.Registration/GetInfo"),
        (b"content-type", b"application/grpc"),
    ]);
    let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let frame = |kind: u8, flags: u8, id: u32, payload: &[u8], out: &mut Vec<u8>| {
        let length = payload.len() as u32;
        out.extend(&length.to_be_bytes()[1..]);
        out.extend([kind, flags]);
        out.extend(id.to_be_bytes());
        out.extend(payload);
    };
    frame(4, 0, 0, &[], &mut stream);
    frame(1, 4, 1, &block, &mut stream);
    frame(0, 1, 1, &[0, 0, 0, 0, 0], &mut stream);
    stream
}

fn hpack_authority(rng: &mut fastrand::Rng) -> Finding {
    let input = mutate_bytes(rng, &h2_seed(), &[]);
    let mut rewriter = ssi_csi::authority::Rewriter::default();
    let mut out = Vec::new();
    // Fed in random pieces, as a socket delivers them.
    let mut rest = &input[..];
    while !rest.is_empty() {
        let take = rng.usize(1..=rest.len());
        rewriter.feed(&rest[..take], &mut out);
        rest = &rest[take..];
    }
    // Literal re-encoding may grow a header block, a little; never without bound.
    if out.len() > 2 * input.len() + 1024 {
        return Some(format!(
            "{} bytes out of {} in: {}",
            out.len(),
            input.len(),
            hex(&input)
        ));
    }
    None
}

/// A byte-level mutation of `seed`: flips, deletions, duplications, truncation, splices.
const STORE_REPLY_SEEDS: [&str; 3] = [
    r#"{"data": {"data": {"password": "p", "user": "u"}, "metadata": {"version": 3}}, "lease_duration": 0}"#,
    r#"{"lease_id": "database/creds/app/x", "lease_duration": 90, "renewable": true, "data": {"username": "u", "password": "p"}}"#,
    r#"{"data": {"certificate": "c", "private_key": "k", "ca_chain": ["a", "b"], "expiration": 1900000000}}"#,
];

const JSON_TOKENS: [&str; 10] = [
    "{", "}", "[", "]", ",", ":", "\"", "\\u0000", "1e999", "null",
];

/// A store's reply, parsed within its budget of values and read as a secret: no panic, and no
/// tree larger than the budget.
fn store_reply(rng: &mut fastrand::Rng) -> Finding {
    let seed = STORE_REPLY_SEEDS[rng.usize(..STORE_REPLY_SEEDS.len())];
    let mut body = if rng.bool() {
        mutate_json(rng, seed).into_bytes()
    } else {
        mutate_bytes(rng, seed.as_bytes(), &JSON_TOKENS)
    };
    if rng.u8(..8) == 0 {
        // Dense: many tiny values.
        body = format!("{{\"data\": [{}0]}}", "[],".repeat(rng.usize(1..40_000))).into_bytes();
    }
    let budget = 1 + rng.usize(..20_000);
    let Ok(value) = ssi_core::json::from_slice_bounded(&body, budget) else {
        return None;
    };
    fn count(value: &serde_json::Value) -> usize {
        1 + match value {
            serde_json::Value::Array(items) => items.iter().map(count).sum(),
            serde_json::Value::Object(map) => map.values().map(count).sum(),
            _ => 0,
        }
    }
    let built = count(&value);
    if built > budget {
        return Some(format!("{built} values built within a budget of {budget}"));
    }
    let _ = ssi_vault::Secret::from_response("secret/data/x", value);
    None
}

/// A pull secret's docker config: no panic, at most the bounded number of registries.
fn docker_config(rng: &mut fastrand::Rng) -> Finding {
    let seed = r#"{"auths": {"registry.example.com": {"auth": "dTpw", "email": "x"}, "127.0.0.1:5000": {"username": "u", "password": "p"}}}"#;
    let mut body = if rng.bool() {
        mutate_json(rng, seed).into_bytes()
    } else {
        mutate_bytes(rng, seed.as_bytes(), &JSON_TOKENS)
    };
    if rng.u8(..8) == 0 {
        let entries: Vec<String> = (0..rng.usize(1..2_000))
            .map(|i| format!(r#""h{i}": {{"username": "u", "password": "p"}}"#))
            .collect();
        body = format!(r#"{{"auths": {{{}}}}}"#, entries.join(",")).into_bytes();
    }
    let credentials = ssi_webhook::registry::docker_config_credentials(&body, rng.bool());
    (credentials.len() > ssi_webhook::registry::REGISTRIES_PER_DOCKER_CONFIG)
        .then(|| format!("{} registries taken from one config", credentials.len()))
}

fn mutate_bytes(rng: &mut fastrand::Rng, seed: &[u8], tokens: &[&str]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..rng.usize(1..8) {
        if bytes.is_empty() {
            bytes.push(rng.u8(..));
            continue;
        }
        let at = rng.usize(..bytes.len());
        match rng.u8(..6) {
            0 => bytes[at] ^= 1 << rng.u8(..8),
            1 => {
                let end = (at + rng.usize(1..16)).min(bytes.len());
                bytes.drain(at..end);
            }
            2 => {
                let end = (at + rng.usize(1..64)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            3 => bytes.truncate(at),
            4 if !tokens.is_empty() => {
                let token = tokens[rng.usize(..tokens.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            _ => bytes[at] = rng.u8(..),
        }
    }
    bytes
}

/// A structural mutation: parse the seed, replace a few values anywhere in the tree with odd
/// ones, serialise again.
fn mutate_json(rng: &mut fastrand::Rng, seed: &str) -> String {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(seed) else {
        return seed.to_owned();
    };
    for _ in 0..rng.usize(1..6) {
        let odd = match rng.u8(..8) {
            0 => serde_json::Value::Null,
            1 => serde_json::json!([]),
            2 => serde_json::json!({}),
            3 => serde_json::json!(rng.i64(..)),
            4 => serde_json::json!("../../etc"),
            5 => serde_json::json!(REVIEW_TOKENS[rng.usize(..REVIEW_TOKENS.len())]),
            6 => serde_json::json!({"csi": {"driver": "secrets-store.csi.deckhouse.io",
                                     "volumeAttributes": {"secretsStoreImport": "x"}}, "name": "s"}),
            _ => {
                serde_json::json!([{"name": "c", "volumeMounts": [{"name": "s", "subPath": "p"}]}])
            }
        };
        replace_somewhere(rng, &mut value, odd);
    }
    value.to_string()
}

fn replace_somewhere(
    rng: &mut fastrand::Rng,
    value: &mut serde_json::Value,
    odd: serde_json::Value,
) {
    let children = match value {
        serde_json::Value::Object(map) => map.len(),
        serde_json::Value::Array(items) => items.len(),
        _ => 0,
    };
    if children == 0 || rng.u8(..4) == 0 {
        *value = odd;
        return;
    }
    let pick = rng.usize(..children);
    match value {
        serde_json::Value::Object(map) => {
            if let Some((_, child)) = map.iter_mut().nth(pick) {
                replace_somewhere(rng, child, odd);
            }
        }
        serde_json::Value::Array(items) => replace_somewhere(rng, &mut items[pick], odd),
        _ => {}
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(4096)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The load half: the real binary, garbage from 8 clients, every answer checked.
async fn load(budget: Duration, seed: u64) -> anyhow::Result<()> {
    use anyhow::{Context, bail};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    ssi_tests::run(
        std::process::Command::new(ssi_tests::workspace_path("certs/generate.sh"))
            .args(["--ip", "127.0.0.1", "--out"])
            .arg(&certs),
    )?;
    let binary = std::env::current_exe()?.with_file_name("ssi-webhook");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut webhook = std::process::Command::new(&binary)
        .arg(format!("--tls-cert={}", certs.join("tls.crt").display()))
        .arg(format!("--tls-key={}", certs.join("tls.key").display()))
        .arg(format!("--listen-addr=127.0.0.1:{port}"))
        .arg(format!("--admin-addr=127.0.0.1:{admin}"))
        .args([
            "--ssi-lookup=false",
            "--registry-lookup=false",
            "--log-format=json",
        ])
        .env("RUST_LOG", "error")
        // The memory figures are of what users run.
        .env(
            ssi_tests::webhook::CHART_ALLOCATOR_ENV.0,
            ssi_tests::webhook::CHART_ALLOCATOR_ENV.1,
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let pid = webhook.id();
    let ca = std::fs::read(certs.join("ca.crt"))?;
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca)?)
        .timeout(Duration::from_secs(15))
        .build()?;
    let url = format!("https://127.0.0.1:{port}/mutate");
    let started = Instant::now();
    while client.post(&url).body("{}").send().await.is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("ssi-webhook did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_start = ssi_tests::status_kib(pid, "VmRSS");
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for worker in 0..8u64 {
        let (client, url) = (client.clone(), url.clone());
        clients.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(worker));
            let mut sent = 0u64;
            while started.elapsed() < budget {
                let body: Vec<u8> = match rng.u8(..4) {
                    0 => (0..rng.usize(0..65536)).map(|_| rng.u8(..)).collect(),
                    1 => mutate_bytes(&mut rng, REVIEW_SEEDS[0].as_bytes(), &REVIEW_TOKENS),
                    _ => {
                        let seed = REVIEW_SEEDS[rng.usize(..REVIEW_SEEDS.len())];
                        mutate_json(&mut rng, seed).into_bytes()
                    }
                };
                let response = client.post(&url).body(body.clone()).send().await?;
                let status = response.status();
                let answer: serde_json::Value = serde_json::from_slice(&response.bytes().await?)
                    .with_context(|| format!("HTTP {status}: not JSON for {}", hex(&body)))?;
                if status != 200 || !answer["response"]["allowed"].is_boolean() {
                    bail!("HTTP {status}, {answer} for {}", hex(&body));
                }
                sent += 1;
            }
            Ok::<u64, anyhow::Error>(sent)
        });
    }
    let mut total = 0;
    while let Some(result) = clients.join_next().await {
        total += result??;
    }
    if let Some(status) = webhook.try_wait()? {
        bail!("ssi-webhook exited: {status}");
    }
    let (rss_end, peak) = (
        ssi_tests::status_kib(pid, "VmRSS"),
        ssi_tests::status_kib(pid, "VmHWM"),
    );
    let _ = webhook.kill();
    let _ = webhook.wait();
    println!(
        "load: {total} reviews in {:.0} s from 8 clients ({:.0}/s), every answer HTTP 200 and a \
         well-formed review; ssi-webhook RSS {rss_start} KiB at start, {rss_end} KiB at the end, \
         peak {peak} KiB",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}
