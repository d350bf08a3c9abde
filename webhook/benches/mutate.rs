//! The mutation of the guide's Deployment (DESIGN.md 6: <= 20 us median), a whole review of it
//! (JSON in, mutation, diff, JSON patch out), and a review of a Deployment without secrets.

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

criterion_group!(mutation, benches);
criterion_main!(mutation);
