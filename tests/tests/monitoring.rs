//! The monitoring kit of the chart against real software: the alerts pass `promtool check
//! rules` and `promtool test rules` (Debian's prometheus package), and a real Prometheus server
//! on loopback scrapes the real driver and webhook while they work, so that every metric an
//! alert or a dashboard panel uses is proven to exist with the labels it is used with.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::csi::{CsiDriver, DriverOptions, create_pod, publish};
use ssi_tests::process::{Process, free_port};
use ssi_tests::walkthrough::{self, NAMESPACE, SERVICE_ACCOUNT};
use ssi_tests::webhook::Webhook;
use ssi_tests::{run, wait, workspace_path};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

const RULES: &str = "charts/secrets-store-integration/files/prometheus-rules.yaml";
const DASHBOARD: &str = "charts/secrets-store-integration/files/dashboard.json";
/// Labels a real cluster's scrape configuration attaches (Kubernetes service discovery), not
/// the components: the bed's static targets have none of them.
const TARGET_LABELS: [&str; 3] = ["namespace", "pod", "instance"];

fn promtool() -> Command {
    Command::new("promtool")
}

#[test]
fn the_alerts_pass_promtool_check_and_their_unit_tests() {
    let checked = run(promtool()
        .args(["check", "rules"])
        .arg(workspace_path(RULES)))
    .expect("promtool from Debian's prometheus package (tests/bed/provision.sh installs it)");
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = run(promtool()
        .args(["test", "rules", "rules-test.yaml"])
        .current_dir(workspace_path("tests/monitoring")))
    .unwrap();
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every PromQL expression of the alerts and the dashboard.
fn expressions() -> Vec<String> {
    let rules: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(workspace_path(RULES)).unwrap()).unwrap();
    let mut exprs: Vec<String> = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| rule["expr"].as_str().unwrap().to_owned())
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_path(DASHBOARD)).unwrap()).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

/// The metric names of an expression, and the labels it uses: in selectors (`{result="x"}`)
/// and in groupings (`by (operation, result)`).
fn metrics_and_labels(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if expr[i..].starts_with("ssi_") {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            metrics.insert(expr[i..end].to_owned());
            if expr[end..].starts_with('{') {
                let close = end + expr[end..].find('}').unwrap();
                for matcher in expr[end + 1..close].split(',') {
                    labels.insert(
                        matcher
                            .split(['=', '!', '~'])
                            .next()
                            .unwrap()
                            .trim()
                            .to_owned(),
                    );
                }
            }
            i = end;
        } else if expr[i..].starts_with("by (") {
            let close = i + expr[i..].find(')').unwrap();
            for label in expr[i + 4..close].split(',') {
                labels.insert(label.trim().to_owned());
            }
            i = close;
        } else {
            i += 1;
        }
    }
    labels.retain(|l| !l.is_empty() && !TARGET_LABELS.contains(&l.as_str()));
    (metrics, labels)
}

#[tokio::test]
async fn a_real_prometheus_finds_every_metric_the_alerts_and_the_dashboard_use() {
    let bed = walkthrough::guide_bed().await.expect("the guide's bed");

    // The driver: a published volume, store requests, rotation cycles (every 2 s here).
    let driver = CsiDriver::start(&bed, DriverOptions::default())
        .await
        .unwrap();
    let volume = create_pod(
        &bed,
        &driver,
        NAMESPACE,
        "metrics-1",
        SERVICE_ACCOUNT,
        "python-backend",
    )
    .await
    .unwrap();
    publish(&bed, &driver, &volume).await.expect("publish");

    // The webhook: a review, and a certificate reload (a new pair from the same CA).
    let webhook = Webhook::start(&bed, &["--tls-reload-interval=1s"])
        .await
        .unwrap();
    let review = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NAMESPACE, "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                       "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    webhook.review(&review).await.unwrap();
    run(Command::new(workspace_path("certs/generate.sh"))
        .args(["--ip", "127.0.0.1", "--out"])
        .arg(&webhook.certs))
    .unwrap();

    // A real Prometheus on loopback scraping both admin ports.
    let port = free_port().unwrap();
    let config = bed.dir().join("prometheus.yml");
    let target = |url: &str| url.trim_start_matches("http://").to_owned();
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: ssi\n    static_configs:\n      - targets: [{:?}, {:?}]\n",
            target(&driver.admin),
            target(&webhook.admin)
        ),
    )
    .unwrap();
    let mut command = Command::new("prometheus");
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            bed.dir().join("prometheus").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let _prometheus =
        Process::spawn("prometheus", command, &bed.dir().join("prometheus.log")).unwrap();

    let wanted: Vec<(String, BTreeSet<String>, BTreeSet<String>)> = expressions()
        .into_iter()
        .map(|expr| {
            let (metrics, labels) = metrics_and_labels(&expr);
            assert!(!metrics.is_empty(), "no ssi_ metric in {expr}");
            (expr, metrics, labels)
        })
        .collect();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/series");
    let all: BTreeSet<String> = wanted.iter().flat_map(|(_, m, _)| m.clone()).collect();
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let waiting = wait::Waiting::new(
        Duration::from_secs(60),
        "Prometheus to have scraped every metric the alerts and the dashboard use",
    );
    loop {
        for metric in all
            .iter()
            .filter(|m| !found.contains_key(*m))
            .cloned()
            .collect::<Vec<_>>()
        {
            let Ok(response) = client
                .get(format!("{url}?match%5B%5D={metric}"))
                .send()
                .await
            else {
                continue;
            };
            let Ok(answer) = response.json::<serde_json::Value>().await else {
                continue;
            };
            let labels: BTreeSet<String> = answer["data"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|series| series.as_object().unwrap().keys().cloned())
                .collect();
            if !labels.is_empty() {
                found.insert(metric, labels);
            }
        }
        let missing: Vec<&String> = all.iter().filter(|m| !found.contains_key(*m)).collect();
        if missing.is_empty() {
            break;
        }
        waiting
            .pause(&format!("not scraped yet: {missing:?}"))
            .await
            .unwrap();
    }
    for (expr, metrics, labels) in &wanted {
        for label in labels {
            assert!(
                metrics.iter().any(|m| found[m].contains(label)),
                "{expr}: no series of {metrics:?} has the label {label:?} (they have {:?})",
                metrics.iter().map(|m| &found[m]).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn expressions_are_read_for_their_metrics_and_labels() {
    let (metrics, labels) = metrics_and_labels(
        "sum by (namespace, pod, operation) (increase(ssi_csi_store_requests_total{result=\"error\"}[15m])) > 10",
    );
    assert_eq!(
        metrics,
        BTreeSet::from(["ssi_csi_store_requests_total".to_owned()])
    );
    assert_eq!(
        labels,
        BTreeSet::from(["operation".to_owned(), "result".to_owned()])
    );
    let (metrics, labels) = metrics_and_labels(
        "histogram_quantile(0.99, sum by (le) (rate(ssi_webhook_admission_review_seconds_bucket[5m])))",
    );
    assert_eq!(metrics.len(), 1);
    assert_eq!(labels, BTreeSet::from(["le".to_owned()]));
    assert_eq!(expressions().len(), 16, "6 alerts and 10 panels");
}
