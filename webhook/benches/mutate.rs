//! The mutation of the guide's Deployment (DESIGN.md 6: <= 20 us median), a whole review of it
//! (JSON in, mutation, diff, JSON patch out), a review of a Deployment without secrets, and
//! the review of an update of a workload as clusters hold them (labels, managed fields, env,
//! probes, resources, its old object beside it) with the guide's volume.

// A benchmark on a broken fixture should stop loudly.
#![allow(clippy::expect_used)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ssi_webhook::mutate::{SubpathPolicy, mutate};
use ssi_webhook::registry::Entrypoints;
use ssi_webhook::review::review;
use std::hint::black_box;

// The allocator the binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REVIEW: &str = include_str!("../tests/fixtures/deployment-create.json");

fn benches(c: &mut Criterion) {
    let request: serde_json::Value = serde_json::from_str(REVIEW).expect("fixture is JSON");
    let deployment = request["request"]["object"].clone();
    assert!(
        mutate(&mut deployment.clone(), SubpathPolicy::Deny).is_ok(),
        "the guide's Deployment is admitted"
    );
    c.bench_function("mutate_guide_deployment", |b| {
        b.iter_batched_ref(
            || deployment.clone(),
            |object| mutate(black_box(object), SubpathPolicy::Deny),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("review_guide_deployment", |b| {
        b.iter(|| {
            let reviewed = review(
                black_box(REVIEW.as_bytes()),
                &SubpathPolicy::Deny.into(),
                &Entrypoints::new(),
            );
            reviewed.response.to_review_json()
        })
    });
    // Most pods in a cluster use no secrets-store volume: they take the short path.
    let unrelated = REVIEW.replace("secrets-store.csi.deckhouse.io", "other.csi.example.com");
    c.bench_function("review_unrelated_deployment", |b| {
        b.iter(|| {
            let reviewed = review(
                black_box(unrelated.as_bytes()),
                &SubpathPolicy::Deny.into(),
                &Entrypoints::new(),
            );
            reviewed.response.to_review_json()
        })
    });
}

/// An UPDATE review (`kubectl apply` of a new image) of a Deployment the way a cluster holds it:
/// managed fields, labels, two containers with env, probes and resources, the old object, and
/// the guide's secrets-store volume mounted in both containers.
fn busy_update() -> String {
    let container = |name: &str, image: &str| {
        serde_json::json!({"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "env": (0..20).map(|i| serde_json::json!({"name": format!("SETTING_{i}"), "value": format!("value-{i}")})).collect::<Vec<_>>(),
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 5},
            "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets"}]})
    };
    let deployment = |image: &str| {
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "backend", "namespace": "my-namespace1", "uid": "3f0c7a52-2a0e-4d0f-9a57-1c2e7a1b9d40",
                "resourceVersion": "123456", "generation": 7,
                "labels": {"app": "backend", "team": "payments", "tier": "api"},
                "annotations": {"deployment.kubernetes.io/revision": "7"},
                "managedFields": (0..6).map(|i| serde_json::json!({"manager": format!("manager-{i}"), "operation": "Apply",
                    "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}, "f:team": {}}}, "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {}}}}}})).collect::<Vec<_>>()},
            "spec": {"replicas": 3, "revisionHistoryLimit": 10, "selector": {"matchLabels": {"app": "backend"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"metadata": {"labels": {"app": "backend", "team": "payments"}},
                    "spec": {"serviceAccountName": "backend-sa", "terminationGracePeriodSeconds": 30,
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000},
                        "containers": [container("backend", image), container("sidecar", "proxy:1.2.3")],
                        "volumes": [{"name": "secrets", "csi": {"driver": "secrets-store.csi.deckhouse.io", "readOnly": true,
                            "volumeAttributes": {"secretsStoreImport": "python-backend"}}}]}}},
            "status": {"observedGeneration": 7, "replicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}})
    };
    serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "7d0a51c4-5e55-4c33-8f1e-0f6f1b3c2a77",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "backend", "namespace": "my-namespace1", "operation": "UPDATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": deployment("some/app:0.0.2"), "oldObject": deployment("some/app:0.0.1"),
            "dryRun": false, "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"}}})
    .to_string()
}

fn busy(c: &mut Criterion) {
    let update = busy_update();
    assert_eq!(
        review(
            update.as_bytes(),
            &SubpathPolicy::Deny.into(),
            &Entrypoints::new()
        )
        .verdict,
        ssi_webhook::review::Verdict::Patched,
        "the mounts are made read-only"
    );
    c.bench_function("review_busy_deployment_update", |b| {
        b.iter(|| {
            let reviewed = review(
                black_box(update.as_bytes()),
                &SubpathPolicy::Deny.into(),
                &Entrypoints::new(),
            );
            reviewed.response.to_review_json()
        })
    });
}

criterion_group!(mutation, benches, busy);
criterion_main!(mutation);
