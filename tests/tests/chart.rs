//! The Helm chart (charts/secrets-store-integration), the one way the components are installed,
//! with the real helm (built from its Go module by tests/bed/provision.sh) and the real
//! kube-apiserver: it lints, refuses wrong values at install time, follows the workspace's
//! version and CRD, and what it renders passes a server-side dry run with nothing the
//! components rely on dropped, with generated certificates and with cert-manager's.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::chart::{SYSTEM_NAMESPACE, chart_dir, helm, objects, render, render_in};
use ssi_tests::process::cert_manager_crds;
use ssi_tests::{TestBed, run, workspace_path};

const ADDRESS: &str = "store.address=https://vault.example.com:8200";

fn template(values: &[&str]) -> Result<String, String> {
    let home = tempfile::tempdir().unwrap();
    render(home.path(), values).map_err(|e| format!("{e:#}"))
}

/// [`template`] of a release in `namespace`.
fn template_in(namespace: &str, values: &[&str]) -> Result<String, String> {
    let home = tempfile::tempdir().unwrap();
    render_in(home.path(), namespace, values).map_err(|e| format!("{e:#}"))
}

#[test]
fn the_chart_lints_and_follows_the_workspace_version_and_crd() {
    let home = tempfile::tempdir().unwrap();
    let lint = run(helm(home.path())
        .unwrap()
        .args(["lint", "--strict"])
        .arg(chart_dir())
        .args([
            "--kube-version",
            &ssi_tests::chart::pinned_kube_version().unwrap(),
        ])
        .args(["--set", ADDRESS, "--set", ssi_tests::chart::LOCAL_IMAGES]))
    .unwrap();
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let cargo = std::fs::read_to_string(workspace_path("Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the workspace version");
    let chart_yaml = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    assert!(
        chart_yaml.contains(&format!("\nversion: {version}\n")),
        "{chart_yaml}"
    );
    assert!(
        chart_yaml.contains(&format!("\nappVersion: \"{version}\"\n")),
        "{chart_yaml}"
    );

    let rendered = template(&[ADDRESS]).unwrap();
    for image in ["ssi-csi", "ssi-webhook", "ssi-injector"] {
        assert!(
            rendered.contains(&format!("secrets-store-integration/{image}:{version}")),
            "{image} follows the version"
        );
    }
    // The tests and benchmarks run the webhook with the allocator setting the chart gives it.
    let items = objects(&rendered).unwrap();
    let webhook = ssi_tests::chart::find(&items, "Deployment").unwrap();
    let (name, value) = ssi_tests::webhook::CHART_ALLOCATOR_ENV;
    let set = webhook["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|var| var["name"] == name);
    assert_eq!(
        set.map(|var| &var["value"]),
        Some(&serde_json::json!(value)),
        "the chart's {name} and ssi_tests::webhook::CHART_ALLOCATOR_ENV"
    );
    // The CRD is generated from the Rust type into manifests/crd (core/tests/crd.rs); the
    // chart carries the same bytes.
    assert_eq!(
        std::fs::read_to_string(chart_dir().join("crds/secretsstoreimport.yaml")).unwrap(),
        std::fs::read_to_string(workspace_path("manifests/crd/secretsstoreimport.yaml")).unwrap(),
        "copy manifests/crd/secretsstoreimport.yaml into the chart's crds/"
    );
}

#[test]
fn the_webhooks_match_conditions_are_the_codes_own_rule() {
    let rendered = template(&[ADDRESS]).unwrap();
    let objects = ssi_tests::chart::objects(&rendered).unwrap();
    let config = ssi_tests::chart::find(&objects, "MutatingWebhookConfiguration").unwrap();
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let webhooks = config["webhooks"].as_array().unwrap();
    for (webhook, (name, expression)) in webhooks.iter().zip([
        ssi_webhook::matching::ENFORCE_CONDITION,
        ssi_webhook::matching::INJECT_CONDITION,
    ]) {
        let conditions = webhook["matchConditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1, "{webhook}");
        assert_eq!(conditions[0]["name"], name);
        assert_eq!(
            words(conditions[0]["expression"].as_str().unwrap()),
            words(expression),
            "the chart's CEL of {name} and webhook/src/matching.rs must be the same rule"
        );
    }
}

#[test]
fn a_wrong_value_fails_at_install_time_and_names_it() {
    for (values, named) in [
        (vec![], "address"),
        (vec!["store.address=vault.example.com"], "address"),
        (
            vec![ADDRESS, "csi.rotationInterval=soon"],
            "rotationInterval",
        ),
        (
            vec![ADDRESS, "webhook.subPathPolicy=maybe"],
            "subPathPolicy",
        ),
        (
            vec![ADDRESS, "webhook.failurePolicy.enforce=Never"],
            "enforce",
        ),
        (vec![ADDRESS, "webhook.replica=3"], "replica"),
        (vec![ADDRESS, "csi.extraEnv.RUST_LOG=debug"], "RUST_LOG"),
        (vec![ADDRESS, "webhook.certificate.source=vault"], "source"),
        (
            vec![ADDRESS, "webhook.certificate.source=existing"],
            "caCert",
        ),
        // A value cannot add YAML of its own, nor override what the chart sets.
        (
            vec![
                ADDRESS,
                "images.repository=x\n---\nkind: ClusterRoleBinding",
            ],
            "repository",
        ),
        (
            vec![
                ADDRESS,
                "webhook.certificate.certManagerIssuer.name=a\nb: c",
            ],
            "name",
        ),
        (vec![ADDRESS, "csi.kubeletRoot=/"], "kubeletRoot"),
        (
            vec![ADDRESS, "csi.extraEnv.SSI_CSI_KUBELET_ROOT=/"],
            "SSI_CSI_KUBELET_ROOT",
        ),
        (
            vec![ADDRESS, "csi.extraEnv.SSI_WEBHOOK_SUBPATH_POLICY=warn"],
            "SSI_WEBHOOK_SUBPATH_POLICY",
        ),
        (
            vec![
                ADDRESS,
                "webhook.extraEnv.SSI_WEBHOOK_LISTEN_ADDR=0.0.0.0:9",
            ],
            "SSI_WEBHOOK_LISTEN_ADDR",
        ),
        (
            vec![ADDRESS, "webhook.extraEnv.SSI_WEBHOOK_CLIENT_CA_FILE=/x"],
            "SSI_WEBHOOK_CLIENT_CA_FILE",
        ),
        (vec![ADDRESS, "webhook.timeoutSeconds=5"], "timeoutSeconds"),
        // Below the webhook's own 9 s review budget, the apiserver would give up first.
        (vec![ADDRESS, "webhook.timeoutSeconds=9"], "timeoutSeconds"),
        // The kernel takes a tmpfs of size 0 as one without a limit.
        (vec![ADDRESS, "csi.tmpfsSize=0"], "tmpfsSize"),
        (vec![ADDRESS, "csi.tmpfsSize=0m"], "tmpfsSize"),
        // The driver refuses a zero interval: it would crash-loop.
        (vec![ADDRESS, "csi.rotationInterval=0s"], "rotationInterval"),
        (
            vec![ADDRESS, "csi.rotationInterval=0m0s"],
            "rotationInterval",
        ),
    ] {
        let error = template(&values).expect_err(&format!("{values:?} must be refused"));
        assert!(
            error.contains("values don't meet the specifications of the schema")
                && error.contains(named),
            "{values:?}: {error}"
        );
    }
    // No default that pulls from someone else's namespace: the value is required, and says how.
    let error = template(&[ADDRESS, "images.repository="]).unwrap_err();
    assert!(
        error.contains("images.repository is required")
            && error.contains("docs/install.md")
            && error.contains("kind load"),
        "{error}"
    );
    // Namespaces the components may not go into, and a namespace the chart cannot own.
    for (namespace, values, says) in [
        (
            "default",
            vec![ADDRESS],
            "may not go into namespace default",
        ),
        (
            "kube-public",
            vec![ADDRESS],
            "may not go into namespace kube-public",
        ),
        (
            SYSTEM_NAMESPACE,
            vec![ADDRESS, "namespace.create=true"],
            "another namespace than the release's",
        ),
    ] {
        let error = template_in(namespace, &values).expect_err(namespace);
        assert!(error.contains(says), "{namespace}: {error}");
    }
}

/// `kubectl apply --dry-run=server -o json` of the chart rendered with `values`: the objects as
/// the apiserver would store them.
fn dry_run(bed: &TestBed, values: &[&str]) -> Vec<serde_json::Value> {
    dry_run_in(bed, SYSTEM_NAMESPACE, values)
}

/// [`dry_run`] of a release in `namespace`.
fn dry_run_in(bed: &TestBed, namespace: &str, values: &[&str]) -> Vec<serde_json::Value> {
    let rendered = template_in(namespace, values).unwrap();
    let path = bed.dir().join("rendered.yaml");
    std::fs::write(&path, rendered).unwrap();
    let output = run(bed.kubectl().args([
        "apply",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        path.to_str().unwrap(),
    ]))
    .unwrap();
    let applied: serde_json::Value = serde_json::from_str(&output).unwrap();
    applied["items"].as_array().expect("a list").clone()
}

async fn bed_with_namespace() -> TestBed {
    let bed = TestBed::builder()
        .without_openbao()
        .start()
        .await
        .expect("test bed");
    // A dry run creates nothing, so the objects inside the namespace need it to exist for real.
    run(bed
        .kubectl()
        .args(["create", "namespace", SYSTEM_NAMESPACE]))
    .unwrap();
    bed
}

#[tokio::test]
async fn the_driver_passes_a_server_side_dry_run_with_every_field_kept() {
    let bed = bed_with_namespace().await;
    let items = dry_run_in(
        &bed,
        "ssi-releases",
        &[
            ADDRESS,
            "namespace.create=true",
            &format!("namespace.name={SYSTEM_NAMESPACE}"),
        ],
    );
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "CSIDriver",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let namespace = items.iter().find(|i| i["kind"] == "Namespace").unwrap();
    assert_eq!(
        namespace["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "uninstalling never deletes the namespace"
    );

    // The driver is privileged: its namespace admits it under Pod Security Admission even on
    // clusters whose default level is stricter.
    let namespace = items.iter().find(|i| i["kind"] == "Namespace").unwrap();
    for mode in ["enforce", "warn", "audit"] {
        assert_eq!(
            namespace["metadata"]["labels"][format!("pod-security.kubernetes.io/{mode}")],
            "privileged",
            "{namespace}"
        );
    }

    // Nothing the driver relies on dropped by the apiserver.
    let driver = items.iter().find(|i| i["kind"] == "CSIDriver").unwrap();
    let spec = &driver["spec"];
    assert_eq!(spec["attachRequired"], false);
    assert_eq!(spec["podInfoOnMount"], true);
    assert_eq!(
        spec["volumeLifecycleModes"],
        serde_json::json!(["Ephemeral"])
    );
    // The empty audience: tokens for the apiserver's own, which the guide's roles accept.
    assert_eq!(
        spec["tokenRequests"],
        serde_json::json!([{"audience": "", "expirationSeconds": 3600}]),
        "{spec}"
    );
    assert_eq!(spec["requiresRepublish"], true, "{spec}");

    let daemonset = items.iter().find(|i| i["kind"] == "DaemonSet").unwrap();
    let containers = daemonset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    // One container: the driver registers itself with kubelet (no registrar sidecar).
    assert_eq!(names, ["driver"]);
    let driver_container = &containers[0];
    let env = |name: &str| {
        driver_container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["value"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        env("SSI_CSI_REGISTRATION_SOCKET").as_deref(),
        Some("/registration/secrets-store.csi.deckhouse.io-reg.sock")
    );
    assert_eq!(
        env("SSI_CSI_KUBELET_CSI_SOCKET").as_deref(),
        Some("/var/lib/kubelet/plugins/secrets-store.csi.deckhouse.io/csi.sock")
    );
    let registration_mount = driver_container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/registration")
        .expect("registration dir mounted");
    let volumes = daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let registration_volume = volumes
        .iter()
        .find(|v| v["name"] == registration_mount["name"])
        .unwrap();
    assert_eq!(
        registration_volume["hostPath"]["path"],
        "/var/lib/kubelet/plugins_registry"
    );
    assert_eq!(driver_container["securityContext"]["privileged"], true);
    let kubelet_mount = driver_container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/kubelet")
        .expect("kubelet dir mounted");
    assert_eq!(kubelet_mount["mountPropagation"], "Bidirectional");
    for container in containers {
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{} has no memory limit",
            container["name"]
        );
    }
    assert!(
        driver_container["image"]
            .as_str()
            .unwrap()
            .starts_with("secrets-store-integration/ssi-csi:")
    );
}

#[tokio::test]
async fn the_webhook_with_generated_certificates_passes_a_server_side_dry_run() {
    let bed = bed_with_namespace().await;
    let items = dry_run(&bed, &[ADDRESS]);
    let find = |kind: &str| {
        items
            .iter()
            .find(|i| i["kind"] == kind)
            .unwrap_or_else(|| panic!("{kind} missing"))
    };

    let config = find("MutatingWebhookConfiguration");
    // Two webhooks: enforcement, which the policed object cannot opt out of, and injection.
    let injection = &config["webhooks"][1];
    assert_eq!(injection["name"], "injection.secrets-store.deckhouse.io");
    assert_eq!(injection["clientConfig"]["service"]["path"], "/inject");
    let ca_bundle = find("Secret")["data"]["ca.crt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(injection["clientConfig"]["caBundle"], ca_bundle.trim());
    assert_eq!(
        injection["objectSelector"]["matchExpressions"][0]["key"],
        "secrets-store.deckhouse.io/webhook"
    );
    assert_eq!(
        injection["objectSelector"]["matchExpressions"][1],
        serde_json::json!({"key": "stronghold.deckhouse.io/mutate", "operator": "NotIn", "values": ["skip"]}),
        "the Deckhouse webhook's opt-out label"
    );
    assert_eq!(
        injection["rules"],
        serde_json::json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                            "operations": ["CREATE"], "scope": "Namespaced"}])
    );
    let webhook = &config["webhooks"][0];
    assert_eq!(webhook["name"], "workloads.secrets-store.deckhouse.io");
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(
        webhook["admissionReviewVersions"],
        serde_json::json!(["v1"])
    );
    assert!(webhook["timeoutSeconds"].as_u64().unwrap() <= 10);
    assert_eq!(webhook["reinvocationPolicy"], "IfNeeded");
    assert_eq!(webhook["clientConfig"]["caBundle"], ca_bundle.trim());
    assert_eq!(
        webhook["clientConfig"]["service"],
        serde_json::json!({"name": "ssi-webhook", "namespace": "secrets-store-integration",
                           "path": "/enforce", "port": 443})
    );
    let resources: Vec<&str> = webhook["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap())
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(
        resources,
        [
            "pods",
            "deployments",
            "statefulsets",
            "daemonsets",
            "replicasets",
            "jobs",
            "cronjobs"
        ]
    );
    let excluded = &webhook["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(excluded["operator"], "NotIn");
    assert_eq!(
        excluded["values"],
        serde_json::json!(["kube-system", "secrets-store-integration"])
    );
    assert!(
        webhook["objectSelector"].is_null() || webhook["objectSelector"] == serde_json::json!({}),
        "an object cannot opt out of enforcement: {webhook}"
    );

    let deployment = find("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "ssi-webhook-tls");
    assert!(
        container["image"]
            .as_str()
            .unwrap()
            .starts_with("secrets-store-integration/ssi-webhook:")
    );

    let secret = find("Secret");
    assert_eq!(secret["metadata"]["name"], "ssi-webhook-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(find("PodDisruptionBudget")["spec"]["minAvailable"], 1);
    assert_eq!(find("Service")["spec"]["ports"][0]["port"], 443);
    // The webhook gets SecretsStoreImports, and ServiceAccounts and Secrets for registry
    // credentials, one at a time: never list, watch or write.
    let role = items
        .iter()
        .find(|i| i["kind"] == "ClusterRole" && i["metadata"]["name"] == "ssi-webhook")
        .unwrap();
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": ["deckhouse.io"], "resources": ["secretsstoreimports"],
                            "verbs": ["get"]},
                           {"apiGroups": [""], "resources": ["serviceaccounts", "secrets"],
                            "verbs": ["get"]}])
    );
}

#[tokio::test]
async fn the_cert_manager_variant_issues_the_secret_the_deployment_mounts() {
    let bed = bed_with_namespace().await;
    for crd in cert_manager_crds().unwrap() {
        run(bed.kubectl().arg("apply").arg("-f").arg(&crd)).unwrap();
    }
    run(bed.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/certificates.cert-manager.io",
        "crd/issuers.cert-manager.io",
    ]))
    .unwrap();
    let values = [
        ADDRESS,
        "webhook.certificate.source=cert-manager",
        "webhook.failurePolicy.inject=Ignore",
    ];
    let applied = dry_run(&bed, &values);
    let kinds: Vec<&str> = applied.iter().filter_map(|i| i["kind"].as_str()).collect();
    assert!(!kinds.contains(&"Secret"), "cert-manager writes the Secret");
    let objects = objects(&template(&values).unwrap()).unwrap();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} missing"))
    };
    let serving = find("Certificate", "ssi-webhook");
    let deployment = find("Deployment", "ssi-webhook");
    assert_eq!(
        serving["spec"]["secretName"],
        deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    );
    assert!(
        serving["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(
                "ssi-webhook.secrets-store-integration.svc"
            ))
    );
    let config = find("MutatingWebhookConfiguration", "ssi-webhook");
    assert_eq!(
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "secrets-store-integration/ssi-webhook"
    );
    assert_eq!(
        find("Issuer", "ssi-webhook-ca")["spec"]["ca"]["secretName"],
        "ssi-webhook-ca"
    );
    assert_eq!(config["webhooks"][1]["failurePolicy"], "Ignore");
}

#[tokio::test]
async fn the_network_policy_example_passes_a_server_side_dry_run() {
    let bed = bed_with_namespace().await;
    // The NetworkPolicy example of docs/install.md.
    let policy = workspace_path("docs/examples/webhook-networkpolicy.yaml");
    run(bed
        .kubectl()
        .args(["apply", "--dry-run=server", "-f", policy.to_str().unwrap()]))
    .unwrap();
}

#[tokio::test]
async fn cluster_shapes_install_ipv6_host_network_client_ca_network_policy_and_own_priority() {
    let bed = bed_with_namespace().await;
    // What helm prints after an install: what was installed and the next steps.
    let home = tempfile::tempdir().unwrap();
    let notes = run(helm(home.path())
        .unwrap()
        .env("KUBECONFIG", &bed.kube().kubeconfig)
        .args(["install", "ssi"])
        .arg(chart_dir())
        .args(["--namespace", SYSTEM_NAMESPACE, "--dry-run=server"])
        .args(["--set", ADDRESS, "--set", ssi_tests::chart::LOCAL_IMAGES]))
    .unwrap();
    let notes = &notes[notes.find("NOTES:").expect("helm prints NOTES")..];
    for needle in [
        "secrets-store-integration/ssi-csi:",
        "kubectl -n secrets-store-integration get daemonset/ssi-csi deployment/ssi-webhook",
        "docs/install.md, section 2",
    ] {
        assert!(notes.contains(needle), "{needle:?} in {notes}");
    }

    // The defaults: the system classes, no class of the chart's, IPv4 addresses.
    let items = dry_run(&bed, &[ADDRESS]);
    assert!(!items.iter().any(|i| i["kind"] == "PriorityClass"));
    // As on GKE (the system classes only in kube-system): a class of the chart's own.
    let items = dry_run(
        &bed,
        &[
            ADDRESS,
            "priorityClass.create=true",
            "csi.priorityClassName=",
            "webhook.priorityClassName=",
        ],
    );
    let find = |items: &[serde_json::Value], kind: &str, name: &str| {
        items
            .iter()
            .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} missing"))
            .clone()
    };
    let class = find(
        &items,
        "PriorityClass",
        "secrets-store-integration-critical",
    );
    assert_eq!(class["value"], 1_000_000_000);
    for (kind, name) in [("DaemonSet", "ssi-csi"), ("Deployment", "ssi-webhook")] {
        let spec = &find(&items, kind, name)["spec"]["template"]["spec"];
        assert_eq!(
            spec["priorityClassName"],
            "secrets-store-integration-critical"
        );
    }
    let env = |items: &[serde_json::Value], kind: &str, name: &str, var: &str| {
        find(items, kind, name)["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == var)
            .map(|e| e["value"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        env(&items, "DaemonSet", "ssi-csi", "SSI_CSI_ADMIN_ADDR").as_deref(),
        Some("0.0.0.0:9809")
    );
    assert!(
        !items.iter().any(|i| i["kind"] == "NetworkPolicy"),
        "off by default"
    );

    // Every shape at once: IPv6-only, the webhook in the node's network on 9443 with a client
    // CA, NetworkPolicies, and the system classes where the cluster admits them.
    let ca = std::fs::read_to_string(workspace_path("tests/fixtures/unrelated-ca.pem")).unwrap();
    let ca_value = format!("webhook.clientCA={}", ca.trim());
    let items = dry_run(
        &bed,
        &[
            ADDRESS,
            "bindAddress=::",
            "webhook.port=9443",
            "webhook.adminPort=9080",
            "webhook.hostNetwork=true",
            &ca_value,
            "webhook.networkPolicy.enabled=true",
            "webhook.networkPolicy.apiServerCIDRs={10.0.0.0/24}",
            "csi.priorityClassName=system-node-critical",
            "webhook.priorityClassName=",
            "priorityClass.create=false",
        ],
    );
    assert!(!items.iter().any(|i| i["kind"] == "PriorityClass"));
    let webhook = find(&items, "Deployment", "ssi-webhook");
    let spec = &webhook["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    assert!(spec.get("priorityClassName").is_none(), "{spec}");
    assert_eq!(
        find(&items, "DaemonSet", "ssi-csi")["spec"]["template"]["spec"]["priorityClassName"],
        "system-node-critical"
    );
    assert_eq!(spec["containers"][0]["ports"][0]["containerPort"], 9443);
    for (var, value) in [
        ("SSI_WEBHOOK_LISTEN_ADDR", "[::]:9443"),
        ("SSI_WEBHOOK_ADMIN_ADDR", "[::]:9080"),
        (
            "SSI_WEBHOOK_CLIENT_CA_FILE",
            "/etc/ssi-webhook/client-ca/ca.crt",
        ),
    ] {
        assert_eq!(
            env(&items, "Deployment", "ssi-webhook", var).as_deref(),
            Some(value),
            "{var}"
        );
    }
    assert_eq!(
        env(&items, "DaemonSet", "ssi-csi", "SSI_CSI_ADMIN_ADDR").as_deref(),
        Some("[::]:9809")
    );
    assert_eq!(
        find(&items, "ConfigMap", "ssi-webhook-client-ca")["data"]["ca.crt"]
            .as_str()
            .unwrap(),
        ca.trim()
    );
    let policy = find(&items, "NetworkPolicy", "ssi-webhook");
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 9443);
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"],
        "10.0.0.0/24"
    );
    let driver_policy = find(&items, "NetworkPolicy", "ssi-csi");
    assert_eq!(
        driver_policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    assert!(
        driver_policy["spec"]["ingress"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "nothing may connect to the driver's pods: {driver_policy}"
    );
}

#[test]
fn from_kubernetes_1_35_the_token_comes_in_the_requests_secrets() {
    let home = tempfile::tempdir().unwrap();
    let csi_driver = |kube_version: &str| {
        let rendered = run(helm(home.path())
            .unwrap()
            .args(["template", "ssi"])
            .arg(chart_dir())
            .args([
                "--namespace",
                SYSTEM_NAMESPACE,
                "--kube-version",
                kube_version,
            ])
            .args(["--set", ADDRESS, "--set", ssi_tests::chart::LOCAL_IMAGES]))
        .unwrap();
        objects(&rendered)
            .unwrap()
            .into_iter()
            .find(|o| o["kind"] == "CSIDriver")
            .unwrap()
    };
    assert_eq!(
        csi_driver("1.35.0")["spec"]["serviceAccountTokenInSecrets"],
        true
    );
    assert_eq!(
        csi_driver("1.37.2")["spec"]["serviceAccountTokenInSecrets"],
        true
    );
    assert!(
        csi_driver("1.34.3")["spec"]
            .get("serviceAccountTokenInSecrets")
            .is_none()
    );
    // Older than matchConditions' GA: refused at install.
    let old = helm(home.path())
        .unwrap()
        .args(["template", "ssi"])
        .arg(chart_dir())
        .args(["--namespace", SYSTEM_NAMESPACE, "--kube-version", "1.29.0"])
        .args(["--set", ADDRESS, "--set", ssi_tests::chart::LOCAL_IMAGES])
        .output()
        .unwrap();
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr).contains("kubeVersion"));
}

#[test]
fn the_monitoring_objects_carry_the_tested_alerts_and_dashboard() {
    let values = [
        ADDRESS,
        "monitoring.podMonitors=true",
        "monitoring.prometheusRule=true",
        "monitoring.dashboard=true",
    ];
    let objects = objects(&template(&values).unwrap()).unwrap();
    let of = |kind: &str| objects.iter().filter(|o| o["kind"] == kind).count();
    assert_eq!(of("PodMonitor"), 2, "the driver and the webhook");
    let rule = objects
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .unwrap();
    let file: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart_dir().join("files/prometheus-rules.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rule["spec"], file,
        "the rules promtool tests (tests/tests/monitoring.rs)"
    );
    let dashboard = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(
        dashboard["data"]["secrets-store-integration.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("files/dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json, file);
    // Off by default: they need the Prometheus Operator's CRDs and Grafana's sidecar.
    let plain = template(&[ADDRESS]).unwrap();
    assert!(!plain.contains("PodMonitor") && !plain.contains("PrometheusRule"));
}

#[tokio::test]
async fn an_install_whose_webhook_never_gets_ready_leaves_no_webhook_behind() {
    // What docs/install.md runs: `helm install --atomic`. Here the webhook can never become
    // ready (no node runs it): helm gives up after the timeout and takes the release back out,
    // webhook configuration included, so the cluster is never left with a webhook that cannot
    // answer.
    let bed = bed_with_namespace().await;
    let home = bed.dir().join("helm");
    let output = helm(&home)
        .unwrap()
        .env("KUBECONFIG", &bed.kube().kubeconfig)
        .args(["install", "ssi"])
        .arg(chart_dir())
        .args([
            "--namespace",
            SYSTEM_NAMESPACE,
            "--atomic",
            "--timeout",
            "15s",
        ])
        .args(["--set", ADDRESS, "--set", ssi_tests::chart::LOCAL_IMAGES])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the install cannot succeed here");
    assert!(stderr.contains("atomic"), "{stderr}");
    let configurations =
        run(bed
            .kubectl()
            .args(["get", "mutatingwebhookconfigurations", "-o", "name"]))
        .unwrap();
    assert!(!configurations.contains("ssi-webhook"), "{configurations}");
    let pod = bed.dir().join("pod.json");
    std::fs::write(
        &pod,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"after","namespace":"default"},
            "spec":{"containers":[{"name":"c","image":"x"}]}}"#,
    )
    .unwrap();
    run(bed
        .kubectl()
        .args(["create", "--dry-run=server", "-f"])
        .arg(&pod))
    .expect("pods are admitted as before");
    // The namespace stays: it was created before the release, not by it.
    run(bed.kubectl().args(["get", "namespace", SYSTEM_NAMESPACE])).unwrap();
}
