//! The webhook's SecretsStoreImport existence warnings against the real kube-apiserver.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::{TestBed, run, workspace_path};
use ssi_webhook::router::SsiChecker;
use std::time::Duration;

#[tokio::test]
async fn missing_ssis_are_warned_about_and_a_failed_lookup_is_only_a_warning() {
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed");
    bed.install_crd().unwrap();
    run(bed.kubectl().args(["create", "namespace", "my-namespace1"])).unwrap();
    run(bed.kubectl().args([
        "apply",
        "-f",
        workspace_path("tests/fixtures/guide/python-backend-ssi.yaml")
            .to_str()
            .unwrap(),
    ]))
    .unwrap();

    let checker = SsiChecker::new(
        bed.kube_client().await.unwrap(),
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    let names = vec!["python-backend".to_owned(), "typo-backend".to_owned()];
    let warnings = checker.warnings("my-namespace1", &names).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("my-namespace1/typo-backend")
            && warnings[0].contains("does not exist"),
        "{warnings:?}"
    );
    // The SSI is looked up in the object's namespace only.
    let warnings = checker.warnings("default", &names[..1]).await;
    assert!(
        warnings[0].contains("default/python-backend"),
        "{warnings:?}"
    );

    // The apiserver goes away: answers from the cache stay, new lookups become warnings.
    let client = bed.kube_client().await.unwrap();
    drop(bed);
    let cold = SsiChecker::new(client, Duration::from_millis(500), Duration::from_secs(60));
    let warnings = cold.warnings("my-namespace1", &names[..1]).await;
    assert!(warnings[0].contains("could not check"), "{warnings:?}");
    assert!(
        checker
            .warnings("my-namespace1", &names[..1])
            .await
            .is_empty(),
        "cached answer"
    );
}
