//! The user's guide against the real test bed, then what a user gets when something is wrong:
//! each mistake gives its own clear error, and the guide's FAQ about `system:auth-delegator` holds.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::walkthrough::{
    self, DEDICATED_AUDIENCE_AUTH_PATH, DEDICATED_AUDIENCE_ROLE, NAMESPACE, Narrator, PASSWORD,
    ROLE, SECRET_PATH, SERVICE_ACCOUNT, VaultSetup,
};
use ssi_tests::{KUBE_API_AUDIENCE, SA_ISSUER, TestBed, VAULT_AUDIENCE, run};
use ssi_vault::{AuthMethod, Client, Error, Login, SecretString, Session, StoreConfig};

fn session(bed: &TestBed, auth_path: &str, role: &str, jwt: &str) -> Session {
    let client = Client::new(&StoreConfig::new(bed.openbao().addr.parse().unwrap())).unwrap();
    Session::new(
        client,
        Login {
            method: AuthMethod::Kubernetes,
            mount: auth_path.into(),
            role: role.into(),
        },
        SecretString::from(jwt.to_owned()),
    )
}

async fn token_for_new_service_account(bed: &TestBed, name: &str, auth_delegator: bool) -> String {
    run(bed
        .kubectl()
        .args(["-n", NAMESPACE, "create", "serviceaccount", name]))
    .unwrap();
    if auth_delegator {
        run(bed.kubectl().args([
            "create",
            "clusterrolebinding",
            &format!("{name}-auth-delegator"),
            "--clusterrole=system:auth-delegator",
            &format!("--serviceaccount={NAMESPACE}:{name}"),
        ]))
        .unwrap();
    }
    bed.service_account_token(NAMESPACE, name, KUBE_API_AUDIENCE)
        .await
        .unwrap()
}

#[tokio::test]
async fn guide_with_the_bao_cli_then_every_mistake_has_its_own_error() {
    let bed = TestBed::start().await.expect("test bed");
    let outcome = walkthrough::run(&bed, VaultSetup::Cli, &mut Narrator::quiet())
        .await
        .expect("the guide works");
    assert_eq!(outcome.sessions.len(), 2, "main-kube and secondary-kube");
    let backend = &outcome.sessions[0];
    assert_eq!(backend.logins(), 1);

    // Another ServiceAccount of the same namespace, even one allowed to review tokens, is not
    // bound to the role.
    let other = token_for_new_service_account(&bed, "other-sa", true).await;
    let err = session(&bed, "main-kube", ROLE, &other)
        .read(SECRET_PATH, None)
        .await
        .expect_err("refused");
    assert!(err.is_permission_denied(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("log in at auth/main-kube as role \"my-namespace1_backend\""),
        "{text}"
    );
    assert!(text.contains("HTTP 403"), "{text}");

    // A role that does not exist.
    let err = session(&bed, "main-kube", "no-such-role", &outcome.backend_token)
        .read(SECRET_PATH, None)
        .await
        .expect_err("unknown role");
    let text = err.to_string();
    assert_eq!(err.status(), Some(400), "{text}");
    assert!(text.contains("no-such-role"), "{text}");

    // A path the role's policy does not grant is refused, not reported missing: the store does
    // not tell an unauthorised caller whether a secret exists.
    let err = backend
        .read("secret/data/other-app", None)
        .await
        .expect_err("not granted");
    assert!(err.is_permission_denied(), "{err}");
    assert!(
        err.to_string()
            .contains("read secret secret/data/other-app"),
        "{err}"
    );

    // A granted path with nothing behind it.
    let policy = "path \"secret/data/database-for-python-app\" { capabilities = [\"read\"] }\n\
                  path \"secret/data/no-such-app\" { capabilities = [\"read\"] }\n";
    let policy_file = bed.dir().join("backend.hcl");
    std::fs::write(&policy_file, policy).unwrap();
    run(bed
        .bao()
        .unwrap()
        .args(["policy", "write", "backend", policy_file.to_str().unwrap()]))
    .unwrap();
    let err = backend
        .read("secret/data/no-such-app", None)
        .await
        .expect_err("missing path");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("secret/data/no-such-app"), "{err}");

    // A key the secret does not have; the message names the keys that exist, never a value.
    let secret = backend.read(SECRET_PATH, None).await.expect("read");
    let err = secret.value("passwd").expect_err("missing key");
    let text = err.to_string();
    assert!(matches!(err, Error::MissingKey { .. }), "{text}");
    assert!(
        text.contains("\"passwd\"") && text.contains("password") && text.contains(SECRET_PATH),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");

    // After a second `kv put`, the latest version is new and version 1 is still the old value.
    run(bed.bao().unwrap().args([
        "kv",
        "put",
        "secret/database-for-python-app",
        "password=rotated-password",
    ]))
    .unwrap();
    let latest = backend.read(SECRET_PATH, None).await.expect("latest");
    assert_eq!(latest.version, Some(2));
    assert_eq!(
        latest.value("password").unwrap().expose(),
        b"rotated-password"
    );
    let first = backend.read(SECRET_PATH, Some(1)).await.expect("version 1");
    assert_eq!(first.version, Some(1));
    assert_eq!(
        first.value("password").unwrap().expose(),
        PASSWORD.as_bytes()
    );
    // One login for the walkthrough, one more after the refused read above (a 403 may mean a
    // revoked token, so the session logs in once more before giving up).
    assert_eq!(
        backend.logins(),
        2,
        "the Vault token is reused across reads"
    );
}

/// The token audience on a stock apiserver: the guide's role (no `audience`) takes the default
/// token, the documented option (a dedicated audience on both sides, with a reviewer of the
/// store's own) works, and each mismatch is refused with a message naming the audience the token
/// carries.
#[tokio::test]
async fn token_audiences_default_dedicated_and_mismatched() {
    let bed = TestBed::start().await.expect("test bed");
    walkthrough::run(&bed, VaultSetup::Cli, &mut Narrator::quiet())
        .await
        .expect("the guide works with the default audience");
    let default_token = bed
        .service_account_token(NAMESPACE, SERVICE_ACCOUNT, KUBE_API_AUDIENCE)
        .await
        .unwrap();
    let vault_token = bed
        .service_account_token(NAMESPACE, SERVICE_ACCOUNT, VAULT_AUDIENCE)
        .await
        .unwrap();
    let refusal = |err: Error, audience: &str| {
        let text = err.to_string();
        assert!(matches!(err, Error::LoginRefused { .. }), "{err:?}");
        assert!(
            text.contains(&format!("token was issued for audience [{audience:?}]")),
            "{text}"
        );
        // Nothing of either token is echoed, claims included.
        for token in [&default_token, &vault_token] {
            for part in token.split('.') {
                assert!(!text.contains(part), "{text}");
            }
        }
        text
    };

    // The guide's set-up (the pod's token reviews itself) with a token requested for `vault`:
    // the stock apiserver does not take it as a credential.
    let err = session(&bed, "main-kube", ROLE, &vault_token)
        .read(SECRET_PATH, None)
        .await
        .expect_err("the apiserver does not take a vault token");
    let text = refusal(err, VAULT_AUDIENCE);
    eprintln!("guide's role, vault token: {text}");

    // The documented option: a reviewer of the store's own, a role with audience=vault, a token
    // requested for `vault`.
    walkthrough::use_a_dedicated_audience(&bed, VAULT_AUDIENCE)
        .await
        .unwrap();
    let secret = session(
        &bed,
        DEDICATED_AUDIENCE_AUTH_PATH,
        DEDICATED_AUDIENCE_ROLE,
        &vault_token,
    )
    .read(SECRET_PATH, None)
    .await
    .expect("dedicated audience on both sides");
    assert_eq!(
        secret.value("password").unwrap().expose(),
        PASSWORD.as_bytes()
    );
    // The guide's mount is untouched: its role still takes the default token.
    session(&bed, "main-kube", ROLE, &default_token)
        .read(SECRET_PATH, None)
        .await
        .expect("the guide's role");

    // The role wants `vault`, the token is the default one.
    let err = session(
        &bed,
        DEDICATED_AUDIENCE_AUTH_PATH,
        DEDICATED_AUDIENCE_ROLE,
        &default_token,
    )
    .read(SECRET_PATH, None)
    .await
    .expect_err("the role wants another audience");
    let text = refusal(err, SA_ISSUER);
    eprintln!("role audience=vault, default token: {text}");
    assert!(
        text.contains("a role with `audience` set accepts only tokens requested for that audience"),
        "{text}"
    );
}

#[tokio::test]
async fn guide_with_curl_calls_and_the_faq_on_auth_delegator() {
    let bed = TestBed::start().await.expect("test bed");
    let outcome = walkthrough::run(&bed, VaultSetup::Http, &mut Narrator::quiet())
        .await
        .expect("the guide works");
    for session in &outcome.sessions {
        let secret = session.read(SECRET_PATH, None).await.expect("read");
        assert_eq!(
            secret.value("password").unwrap().expose(),
            PASSWORD.as_bytes()
        );
    }

    // The FAQ: with no reviewer JWT configured, the store reviews a login token with that same
    // token, so a ServiceAccount without system:auth-delegator cannot log in even when the role
    // is bound to it; binding the cluster role fixes it.
    run(bed.bao().unwrap().args([
        "write",
        "auth/main-kube/role/lonely",
        "bound_service_account_names=lonely-sa",
        &format!("bound_service_account_namespaces={NAMESPACE}"),
        "policies=backend",
        "ttl=10m",
    ]))
    .unwrap();
    let lonely = token_for_new_service_account(&bed, "lonely-sa", false).await;
    let err = session(&bed, "main-kube", "lonely", &lonely)
        .read(SECRET_PATH, None)
        .await
        .expect_err("no review rights");
    assert!(err.is_permission_denied(), "{err}");

    run(bed.kubectl().args([
        "create",
        "clusterrolebinding",
        "lonely-sa-auth-delegator",
        "--clusterrole=system:auth-delegator",
        &format!("--serviceaccount={NAMESPACE}:lonely-sa"),
    ]))
    .unwrap();
    let secret = session(&bed, "main-kube", "lonely", &lonely)
        .read(SECRET_PATH, None)
        .await
        .expect("now allowed");
    assert_eq!(
        secret.value("password").unwrap().expose(),
        PASSWORD.as_bytes()
    );
}

#[tokio::test]
async fn the_apiserver_enforces_the_crd_schema() {
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed");
    bed.install_crd().unwrap();

    let apply = |yaml: String| {
        let path = bed.dir().join("ssi.yaml");
        std::fs::write(&path, yaml).unwrap();
        // --validate=false: the apiserver, not kubectl's client-side check, must refuse.
        bed.kubectl()
            .args([
                "apply",
                "--validate=false",
                "-n",
                "default",
                "-f",
                path.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let ssi = |spec: &str| {
        format!(
            "apiVersion: deckhouse.io/v1alpha1\nkind: SecretsStoreImport\nmetadata:\n  name: bad\nspec:\n{spec}"
        )
    };
    let good_file =
        "  files:\n  - name: db-password\n    source: {path: secret/data/app, key: password}\n";

    let cases = [
        (
            format!("  type: Secret\n  role: r\n{good_file}"),
            "spec.type",
        ),
        (
            format!("  type: CSI\n  role: \"bad role!\"\n{good_file}"),
            "spec.role",
        ),
        (
            "  type: CSI\n  role: r\n  files: []\n".to_owned(),
            "spec.files",
        ),
        (format!("  type: CSI\n{good_file}"), "spec.role"),
        (
            "  type: CSI\n  role: r\n  files:\n  - name: a/b\n    source: {path: p, key: k}\n"
                .to_owned(),
            "spec.files[0].name",
        ),
        (
            "  type: CSI\n  role: r\n  files:\n  - name: a\n    source: {path: p}\n".to_owned(),
            "spec.files[0].source.key",
        ),
        (
            format!("  type: CSI\n  role: r\n  address: vault.example.com\n{good_file}"),
            "spec.address",
        ),
    ];
    for (spec, field) in cases {
        let output = apply(ssi(&spec));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted an invalid SSI:\n{spec}");
        assert!(
            stderr.contains(field),
            "rejection of\n{spec}\ndoes not name {field}: {stderr}"
        );
    }
    assert!(
        run(bed.kubectl().args(["get", "ssi", "-A", "-o", "name"]))
            .unwrap()
            .trim()
            .is_empty(),
        "nothing was stored"
    );

    // The apiserver fills in the default of decodeBase64.
    let output = apply(ssi(&format!("  type: CSI\n  role: r\n{good_file}")));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = run(bed.kubectl().args([
        "-n",
        "default",
        "get",
        "ssi",
        "bad",
        "-o",
        "jsonpath={.spec.files[0].decodeBase64}",
    ]))
    .unwrap();
    assert_eq!(stored, "false");

    // What Deckhouse's schema accepts, ours does: slashes around authPath and source.path (the
    // driver removes them, see core's crd test).
    let output = apply(ssi(
        "  type: CSI\n  role: r\n  authPath: kube/\n  files:\n  - name: db-password\n    \
         source: {path: /demo-kv/data/x, key: password}\n",
    ));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// JWT auth beside Kubernetes auth: the store checks the pod's token against the cluster's
/// published keys itself, with no reviewer token and no `system:auth-delegator` binding (what a
/// store outside the cluster uses, docs/install.md). The login body is the one Kubernetes auth
/// takes, so the driver and the injector need nothing but the mount's path.
#[tokio::test]
async fn jwt_auth_checks_the_pods_token_against_the_clusters_keys_without_a_reviewer() {
    use ssi_core::{SecretFile, SecretsStoreImport, SecretsStoreImportSpec};
    use ssi_tests::csi::{CsiDriver, DriverOptions, create_pod, publish_with_audience};
    let bed = TestBed::start().await.expect("test bed");
    walkthrough::run(&bed, VaultSetup::Cli, &mut Narrator::quiet())
        .await
        .expect("the guide works");
    let kube = bed.kube();
    // The keys are public (docs/install.md): the issuer's discovery documents readable without
    // credentials, as managed clusters publish them.
    run(bed.kubectl().args([
        "create",
        "clusterrolebinding",
        "service-account-issuer-discovery-unauthenticated",
        "--clusterrole=system:service-account-issuer-discovery",
        "--group=system:unauthenticated",
    ]))
    .unwrap();
    let bao = |args: &[&str]| run(bed.bao().unwrap().args(args)).unwrap();
    bao(&["auth", "enable", "jwt"]);
    bao(&[
        "write",
        "auth/jwt/config",
        &format!("jwks_url={}/openid/v1/jwks", kube.url),
        &format!("jwks_ca_pem=@{}", kube.ca_cert.display()),
        &format!("bound_issuer={SA_ISSUER}"),
    ]);
    bao(&[
        "write",
        "auth/jwt/role/backend",
        "role_type=jwt",
        "user_claim=sub",
        &format!("bound_audiences={VAULT_AUDIENCE}"),
        &format!("bound_subject=system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"),
        "token_policies=backend",
        "token_ttl=10m",
    ]);

    // The pod's token, requested for the store's audience, logs in at the jwt mount.
    let token = bed
        .service_account_token(NAMESPACE, SERVICE_ACCOUNT, VAULT_AUDIENCE)
        .await
        .unwrap();
    let secret = session(&bed, "jwt", "backend", &token)
        .read(SECRET_PATH, None)
        .await
        .expect("the pod's token logs in through jwt auth");
    assert_eq!(
        secret.value("password").unwrap().expose(),
        PASSWORD.as_bytes()
    );

    // Another ServiceAccount's token, valid and of the right audience: refused by the role's
    // subject, in the store's words, nothing of the token echoed. (The jwt method answers a
    // claim that does not match with HTTP 400, where Kubernetes auth answers 403.)
    run(bed
        .kubectl()
        .args(["-n", NAMESPACE, "create", "serviceaccount", "other-jwt"]))
    .unwrap();
    let other = bed
        .service_account_token(NAMESPACE, "other-jwt", VAULT_AUDIENCE)
        .await
        .unwrap();
    let err = session(&bed, "jwt", "backend", &other)
        .read(SECRET_PATH, None)
        .await
        .expect_err("another ServiceAccount is refused");
    let text = err.to_string();
    eprintln!("jwt auth, another ServiceAccount: {text}");
    assert!(
        matches!(
            err,
            Error::LoginRefused { .. } | Error::Api { status: 400, .. }
        ),
        "{err:?}"
    );
    assert!(
        text.contains("auth/jwt") && text.contains("sub"),
        "names the mount and the claim: {text}"
    );
    for part in other.split('.') {
        assert!(!text.contains(part), "{text}");
    }

    // The driver, with an SSI that names the method (and so its mount, `jwt`, not the driver's
    // default `main-kube` of the Kubernetes method) and the store's audience: the guide's file.
    let mut spec = SecretsStoreImportSpec::new(
        "backend",
        vec![SecretFile::new("db-password", SECRET_PATH, "password")],
    );
    spec.auth_method = Some(ssi_core::AuthMethod::Jwt);
    spec.audience = Some(VAULT_AUDIENCE.into());
    let mut ssi = SecretsStoreImport::new("through-jwt", spec);
    ssi.metadata.namespace = Some(NAMESPACE.into());
    bed.apply_yaml(&serde_yaml::to_string(&ssi).unwrap())
        .unwrap();
    let driver = CsiDriver::start(&bed, DriverOptions::default())
        .await
        .unwrap();
    let volume = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "jwt-1",
        SERVICE_ACCOUNT,
        "through-jwt",
    )
    .await
    .unwrap();
    publish_with_audience(&bed, &driver, &volume, VAULT_AUDIENCE)
        .await
        .expect("publish");
    assert_eq!(
        std::fs::read(volume.target.join("db-password")).unwrap(),
        PASSWORD.as_bytes()
    );

    // The injector as the webhook configures a pod annotated `auth-method: jwt`: the method's
    // variable, no mount (its own name), the pod's token file. The app gets the guide's value;
    // with another ServiceAccount's token it never starts, and the error names the method.
    let injected = |token: &str| {
        let file = bed.dir().join(format!("jwt-token-{}", token.len()));
        std::fs::write(&file, token).unwrap();
        std::process::Command::new(ssi_tests::csi::workspace_binary("ssi-injector").unwrap())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("SSI_INJECTOR_ADDR", &bed.openbao().addr)
            .env("SSI_INJECTOR_AUTH_METHOD", "jwt")
            .env("SSI_INJECTOR_ROLE", "backend")
            .env("SSI_INJECTOR_TOKEN_PATH", &file)
            .env(
                "DB_PASSWORD",
                format!("secrets-store:{SECRET_PATH}#password"),
            )
            .arg("env")
            .output()
            .unwrap()
    };
    let output = injected(&token);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("DB_PASSWORD={PASSWORD}")),
        "the injected app's env: {stdout}"
    );
    let output = injected(&other);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "the app never ran");
    assert!(
        stderr.contains("log in by jwt at auth/jwt as role \"backend\""),
        "{stderr}"
    );
    for part in other.split('.') {
        assert!(!stderr.contains(part), "{stderr}");
    }
}
