//! `ssi-vault` against a real OpenBao: token reuse and re-login, namespaces, TLS, and the faults a
//! real server can be made to produce on demand (sealed: 503; rate-limited: 429; frozen with
//! SIGSTOP: a hang; stopped: connection refused).

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::{Value, json};
use ssi_tests::walkthrough::{self, Narrator, PASSWORD, ROLE, SECRET_PATH, VaultSetup};
use ssi_tests::{Store, TestBed};
use ssi_vault::{
    AuthMethod, Client, Error, Login, RetryPolicy, SecretString, Session, StoreConfig, VaultToken,
};
use std::time::Duration;

/// A root-token call to the bed's OpenBao, optionally inside a Vault namespace.
async fn admin(
    bed: &TestBed,
    method: reqwest::Method,
    path: &str,
    namespace: Option<&str>,
    body: Option<Value>,
) -> Value {
    let openbao = bed.openbao();
    let mut http = reqwest::Client::builder();
    if let Some(ca) = &openbao.ca_pem {
        http = http.tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.as_bytes()).unwrap());
    }
    let mut request = http
        .build()
        .unwrap()
        .request(method, format!("{}/v1/{path}", openbao.addr))
        .header("X-Vault-Token", &openbao.root_token);
    if let Some(ns) = namespace {
        request = request.header("X-Vault-Namespace", ns);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{path}: HTTP {status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn put_kv2(bed: &TestBed, namespace: Option<&str>, path: &str, data: Value) {
    admin(
        bed,
        reqwest::Method::POST,
        "sys/mounts/secret",
        namespace,
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;
    admin(
        bed,
        reqwest::Method::PUT,
        &format!("secret/data/{path}"),
        namespace,
        Some(json!({"data": data})),
    )
    .await;
}

fn config(bed: &TestBed) -> StoreConfig {
    let mut config = StoreConfig::new(bed.openbao().addr.parse().unwrap());
    config.ca_pem = bed.openbao().ca_pem.clone();
    config
}

fn root(bed: &TestBed) -> VaultToken {
    VaultToken::new(SecretString::from(bed.openbao().root_token.clone()), None)
}

#[tokio::test]
async fn session_reuses_its_token_and_logs_in_again_when_revoked_or_expiring() {
    let bed = TestBed::start().await.expect("test bed");
    let outcome = walkthrough::run(&bed, VaultSetup::Http, &mut Narrator::quiet())
        .await
        .expect("guide");
    let session = &outcome.sessions[0];
    assert_eq!(session.logins(), 1);
    for _ in 0..5 {
        session.read(SECRET_PATH, None).await.expect("read");
    }
    assert_eq!(session.logins(), 1, "five reads, one login");

    // Revoke the session's token behind its back: the next read is refused, logs in, succeeds.
    let token = session.token().await.unwrap();
    admin(
        &bed,
        reqwest::Method::POST,
        "auth/token/revoke",
        None,
        Some(json!({"token": token.expose()})),
    )
    .await;
    let secret = session
        .read(SECRET_PATH, None)
        .await
        .expect("read after revocation");
    assert_eq!(
        secret.value("password").unwrap().expose(),
        PASSWORD.as_bytes()
    );
    assert_eq!(session.logins(), 2);

    // A role whose tokens live 3 s: the session renews its token shortly before expiry (the
    // margin is a fifth of the TTL, at least 1 s), not on every read.
    admin(
        &bed,
        reqwest::Method::PUT,
        "auth/main-kube/role/short",
        None,
        Some(json!({"bound_service_account_names": "backend-sa", "bound_service_account_namespaces": "my-namespace1",
                    "policies": "backend", "ttl": "3s"})),
    )
    .await;
    let client = Client::new(&config(&bed)).unwrap();
    let short = Session::new(
        client.clone(),
        Login {
            method: AuthMethod::Kubernetes,
            mount: "main-kube".into(),
            role: "short".into(),
        },
        SecretString::from(outcome.backend_token.clone()),
    );
    short.read(SECRET_PATH, None).await.expect("read");
    short.read(SECRET_PATH, None).await.expect("read");
    assert_eq!(short.logins(), 1);
    assert_eq!(
        short.token().await.unwrap().ttl(),
        Some(Duration::from_secs(3))
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    short
        .read(SECRET_PATH, None)
        .await
        .expect("read near expiry");
    // Renewed (auth/token/renew-self), not replaced by a login: leases the token obtained live
    // only as long as it does.
    assert_eq!(
        short.logins(),
        1,
        "a renewable token within its refresh margin is renewed"
    );
    assert!(
        !short
            .token()
            .await
            .unwrap()
            .expires_within(Duration::from_secs(2)),
        "the renewal gave it its TTL again"
    );

    // A session handed a bad JWT fails; once the fresh one arrives (kubelet's republish), it works.
    let late = Session::new(
        client,
        Login {
            method: AuthMethod::Kubernetes,
            mount: "main-kube".into(),
            role: ROLE.into(),
        },
        SecretString::from("not-a-jwt".to_owned()),
    );
    let err = late.read(SECRET_PATH, None).await.expect_err("bad jwt");
    assert!(matches!(err, Error::LoginRefused { .. }), "{err}");
    assert!(err.to_string().contains("no readable audience"), "{err}");
    assert!(
        !err.to_string().contains("not-a-jwt"),
        "the JWT must not appear in errors: {err}"
    );
    late.set_jwt(SecretString::from(outcome.backend_token.clone()));
    late.read(SECRET_PATH, None)
        .await
        .expect("read with the fresh JWT");
}

#[tokio::test]
async fn the_namespace_header_selects_the_vault_namespace() {
    let bed = TestBed::builder()
        .without_kube()
        .start()
        .await
        .expect("test bed");
    if bed.openbao().store == Store::Vault {
        return vault_community_has_no_namespaces_and_ignores_the_header(&bed).await;
    }
    admin(
        &bed,
        reqwest::Method::POST,
        "sys/namespaces/team-a",
        None,
        Some(json!({})),
    )
    .await;
    put_kv2(
        &bed,
        Some("team-a"),
        "app",
        json!({"password": "in-team-a"}),
    )
    .await;

    let mut in_team_a = config(&bed);
    in_team_a.namespace = Some("team-a".into());
    let secret = Client::new(&in_team_a)
        .unwrap()
        .read(&root(&bed), "secret/data/app", None)
        .await
        .expect("read in namespace");
    assert_eq!(secret.value("password").unwrap().expose(), b"in-team-a");

    let err = Client::new(&config(&bed))
        .unwrap()
        .read(&root(&bed), "secret/data/app", None)
        .await
        .expect_err("root namespace");
    assert_eq!(err.status(), Some(404), "{err}");
}

/// A difference between the stores (README, "The store matrix"): namespaces are an Enterprise
/// feature of HashiCorp Vault, and Vault's community edition ignores `X-Vault-Namespace`
/// altogether, answering from the root namespace. A namespace set against it does not isolate.
async fn vault_community_has_no_namespaces_and_ignores_the_header(bed: &TestBed) {
    let store = bed.openbao();
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/sys/namespaces/team-a", store.addr))
        .header("X-Vault-Token", &store.root_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("enterprise-only feature"),
        "namespaces are refused as an Enterprise feature"
    );
    put_kv2(bed, None, "app", json!({"password": "in-root"})).await;
    let mut in_team_a = config(bed);
    in_team_a.namespace = Some("team-a".into());
    let secret = Client::new(&in_team_a)
        .unwrap()
        .read(&root(bed), "secret/data/app", None)
        .await
        .expect("the header is ignored");
    assert_eq!(secret.value("password").unwrap().expose(), b"in-root");
}

#[tokio::test]
async fn tls_trusts_the_given_ca_refuses_others_and_skip_verify_skips() {
    let bed = TestBed::builder()
        .without_kube()
        .openbao_tls()
        .start()
        .await
        .expect("test bed");
    put_kv2(&bed, None, "app", json!({"password": "over-tls"})).await;

    let with_ca = Client::new(&config(&bed)).unwrap();
    let secret = with_ca
        .read(&root(&bed), "secret/data/app", None)
        .await
        .expect("read over TLS");
    assert_eq!(secret.value("password").unwrap().expose(), b"over-tls");

    // The system's roots do not know the dev server's CA.
    let mut no_ca = config(&bed);
    no_ca.ca_pem = None;
    no_ca.retry.max_retries = 0;
    let err = Client::new(&no_ca)
        .unwrap()
        .read(&root(&bed), "secret/data/app", None)
        .await
        .expect_err("untrusted");
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    let chain = format!("{:?}", anyhow::Error::from(err));
    assert!(
        chain.to_lowercase().contains("certificate"),
        "the cause names the certificate: {chain}"
    );

    // Some other CA is no better than none.
    let mut wrong_ca = no_ca.clone();
    wrong_ca.ca_pem = Some(
        std::fs::read_to_string(ssi_tests::workspace_path("tests/fixtures/unrelated-ca.pem"))
            .unwrap(),
    );
    let err = Client::new(&wrong_ca)
        .unwrap()
        .read(&root(&bed), "secret/data/app", None)
        .await
        .expect_err("wrong CA");
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");

    let mut skip = no_ca;
    skip.skip_tls_verify = true;
    let secret = Client::new(&skip)
        .unwrap()
        .read(&root(&bed), "secret/data/app", None)
        .await
        .expect("skip verify");
    assert_eq!(secret.value("password").unwrap().expose(), b"over-tls");
}

#[tokio::test]
async fn a_sealed_store_answers_503_and_reads_retry_until_it_is_unsealed() {
    let bed = TestBed::builder()
        .without_kube()
        .start()
        .await
        .expect("test bed");
    put_kv2(&bed, None, "app", json!({"password": "after-unseal"})).await;
    admin(&bed, reqwest::Method::PUT, "sys/seal", None, None).await;

    let mut once = config(&bed);
    once.retry.max_retries = 0;
    let err = Client::new(&once)
        .unwrap()
        .read(&root(&bed), "secret/data/app", None)
        .await
        .expect_err("sealed");
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(
        err.to_string().contains("sealed"),
        "the store's own words reach the user: {err}"
    );

    let mut patient = config(&bed);
    patient.retry = RetryPolicy {
        max_retries: 20,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
    };
    let unseal_key = bed.openbao().unseal_key.clone();
    let addr = bed.openbao().addr.clone();
    let unsealer = async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let response = reqwest::Client::new()
            .put(format!("{addr}/v1/sys/unseal"))
            .json(&json!({"key": unseal_key}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    };
    let client = Client::new(&patient).unwrap();
    let root_token = root(&bed);
    let (read, ()) = tokio::join!(client.read(&root_token, "secret/data/app", None), unsealer);
    let secret = read.expect("read succeeds once unsealed");
    assert_eq!(secret.value("password").unwrap().expose(), b"after-unseal");
}

#[tokio::test]
async fn rate_limited_reads_wait_as_asked_and_succeed() {
    let bed = TestBed::builder()
        .without_kube()
        .start()
        .await
        .expect("test bed");
    put_kv2(&bed, None, "app", json!({"password": "p"})).await;
    admin(
        &bed,
        reqwest::Method::POST,
        "sys/quotas/rate-limit/slow",
        None,
        Some(json!({"path": "secret/", "rate": 1, "interval": "1s"})),
    )
    .await;

    let mut once = config(&bed);
    once.retry.max_retries = 0;
    let impatient = Client::new(&once).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            impatient
                .read(&root(&bed), "secret/data/app", None)
                .await
                .err()
                .and_then(|e| e.status()),
        );
    }
    assert!(
        statuses.contains(&Some(429)),
        "the quota rate-limits quick reads: {statuses:?}"
    );

    let mut patient = config(&bed);
    patient.retry = RetryPolicy {
        max_retries: 5,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
    };
    let client = Client::new(&patient).unwrap();
    for _ in 0..3 {
        client
            .read(&root(&bed), "secret/data/app", None)
            .await
            .expect("retried past the rate limit");
    }
}

#[tokio::test]
async fn a_hanging_store_times_out_and_a_stopped_one_is_unreachable() {
    let bed = TestBed::builder()
        .without_kube()
        .start()
        .await
        .expect("test bed");
    let pid = bed.openbao().pid();

    let mut quick = config(&bed);
    quick.timeout = Duration::from_millis(300);
    quick.retry = RetryPolicy {
        max_retries: 1,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
    };
    ssi_tests::process::freeze(pid).unwrap();
    let started = std::time::Instant::now();
    let result = Client::new(&quick)
        .unwrap()
        .read(&root(&bed), "secret/data/app", None)
        .await;
    ssi_tests::process::thaw(pid).unwrap();
    let err = result.expect_err("frozen store");
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout bounds each attempt"
    );
    assert!(format!("{:?}", anyhow::Error::from(err)).contains("timed out"));

    let addr = bed.openbao().addr.clone();
    drop(bed);
    let mut gone = StoreConfig::new(addr.parse().unwrap());
    gone.retry = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
    };
    let err = Client::new(&gone)
        .unwrap()
        .login(
            &Login {
                method: AuthMethod::Kubernetes,
                mount: "kubernetes".into(),
                role: "r".into(),
            },
            &SecretString::from("jwt".to_owned()),
        )
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains(&addr),
        "the message names the address: {err}"
    );
}

#[tokio::test]
async fn kv_version_1_data_is_passed_as_is() {
    let bed = TestBed::builder()
        .without_kube()
        .start()
        .await
        .expect("test bed");
    admin(
        &bed,
        reqwest::Method::POST,
        "sys/mounts/kv",
        None,
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await;
    admin(
        &bed,
        reqwest::Method::PUT,
        "kv/app",
        None,
        Some(json!({"password": "v1-value", "port": 5432})),
    )
    .await;
    let secret = Client::new(&config(&bed))
        .unwrap()
        .read(&root(&bed), "kv/app", None)
        .await
        .expect("read");
    assert_eq!(secret.version, None);
    assert_eq!(secret.value("password").unwrap().expose(), b"v1-value");
    assert_eq!(secret.value("port").unwrap().expose(), b"5432");
}

/// A secret larger than the reply cap: a clear error naming its path, and the client's memory
/// stays bounded; a larger cap, set on purpose, reads it.
#[tokio::test]
async fn a_reply_over_the_cap_is_refused_by_path() {
    let bed = TestBed::builder()
        .without_kube()
        .start()
        .await
        .expect("test bed");
    let big = "x".repeat(6 * 1024 * 1024);
    put_kv2(&bed, None, "big", json!({"blob": big})).await;
    let rss_before = ssi_tests::status_kib(std::process::id(), "VmRSS");
    let client = Client::new(&config(&bed)).unwrap();
    let err = client
        .read(&root(&bed), "secret/data/big", None)
        .await
        .expect_err("over the cap");
    assert!(matches!(err, Error::ResponseTooLarge { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("read secret secret/data/big")
            && text.contains(&format!(
                "larger than {}",
                ssi_vault::DEFAULT_MAX_RESPONSE_BYTES
            )),
        "{text}"
    );
    let rss_after = ssi_tests::status_kib(std::process::id(), "VmRSS");
    // NB: OpenBao streams large replies (no Content-Length), so up to the cap is read before
    // the refusal: the growth is bounded by the cap (twice it, with the buffer's doubling and
    // what the allocator keeps), not by the reply.
    let cap_kib = (ssi_vault::DEFAULT_MAX_RESPONSE_BYTES / 1024) as u64;
    assert!(
        rss_after < rss_before + 2 * cap_kib + 2048,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );

    let mut generous = config(&bed);
    generous.max_response_bytes = 16 * 1024 * 1024;
    let secret = Client::new(&generous)
        .unwrap()
        .read(&root(&bed), "secret/data/big", None)
        .await
        .expect("under a larger cap");
    assert_eq!(secret.value("blob").unwrap().expose().len(), big.len());
}
