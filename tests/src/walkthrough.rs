//! The user's guide (`docs/reference/user-guide-vault-setup.txt`) replayed against the test bed.
//!
//! The Vault side runs the guide's commands with the real `bao` CLI (the guide's `vault ...`
//! lines, word for word) or as the guide's curl calls over HTTP; the Kubernetes side applies the
//! guide's manifests with `kubectl`. Then `ssi-vault` logs in as the pod's ServiceAccount and reads
//! the password, which is what the CSI driver and the injector will do for a real pod.
//!
//! Both the main job (`cargo run -p ssi-tests --bin walkthrough`) and the test suite call
//! [`run`], so the demo a person watches is the code the tests check.

use crate::{KUBE_API_AUDIENCE, TestBed, run as run_command, workspace_path};
use anyhow::{Context, bail, ensure};
use serde_json::json;
use ssi_vault::{AuthMethod, Client, Login, SecretString, Session, StoreConfig};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The guide's namespace.
pub const NAMESPACE: &str = "my-namespace1";
/// The guide's ServiceAccount, whose pods may read the secret.
pub const SERVICE_ACCOUNT: &str = "backend-sa";
/// The guide's role of the Kubernetes auth method.
pub const ROLE: &str = "my-namespace1_backend";
/// The guide's KV v2 path, written in full as the user writes it.
pub const SECRET_PATH: &str = "secret/data/database-for-python-app";
/// The password the guide stores at [`SECRET_PATH`].
pub const PASSWORD: &str = "db-secret-password";
/// The guide's two Kubernetes auth mounts, one per cluster.
pub const AUTH_PATHS: [&str; 2] = ["main-kube", "secondary-kube"];
const POLICY: &str =
    "path \"secret/data/database-for-python-app\" {\n capabilities = [\"read\"]\n}\n";

/// How the Vault side of the guide is played.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultSetup {
    /// The guide's `vault ...` commands, run with the real `bao` CLI.
    Cli,
    /// The guide's curl equivalents, sent as the same HTTP requests.
    Http,
}

/// Prints the walkthrough as a person would follow it: numbered steps and the commands run.
#[derive(Debug, Default)]
pub struct Narrator {
    step: usize,
    quiet: bool,
}

impl Narrator {
    /// A narrator that prints nothing, for the test suites.
    pub fn quiet() -> Narrator {
        Narrator {
            step: 0,
            quiet: true,
        }
    }

    /// Prints the next numbered step.
    pub fn step(&mut self, title: &str) {
        self.step += 1;
        if !self.quiet {
            println!("\n[{}] {title}", self.step);
        }
    }

    /// Prints a command as the reader would type it.
    pub fn command(&self, text: &str) {
        if !self.quiet {
            println!("    $ {text}");
        }
    }

    /// Prints a command's output, indented under it.
    pub fn result(&self, text: &str) {
        if !self.quiet {
            for line in text.trim_end().lines() {
                println!("      {line}");
            }
        }
    }
}

/// What the walkthrough established, for the caller to check further.
#[derive(Debug)]
pub struct Outcome {
    /// A TokenRequest token of `backend-sa` for the apiserver's own audience, as kubelet passes
    /// it to the driver and projects it for the injector by default.
    pub backend_token: String,
    /// One logged-in session per auth path, as `backend-sa`.
    pub sessions: Vec<Session>,
}

/// A fresh bed on which the guide was played quietly (its HTTP variant): what most
/// end-to-end tests start from.
pub async fn guide_bed() -> crate::Result<TestBed> {
    guide_bed_from(TestBed::builder()).await
}

/// [`guide_bed`] on a bed built as `builder` says.
pub async fn guide_bed_from(builder: crate::bed::TestBedBuilder) -> crate::Result<TestBed> {
    let bed = builder.start().await?;
    run(&bed, VaultSetup::Http, &mut Narrator::quiet()).await?;
    Ok(bed)
}

/// Plays the whole guide: Vault setup, Kubernetes objects, then a login and read as the pod.
pub async fn run(
    bed: &TestBed,
    setup: VaultSetup,
    narrator: &mut Narrator,
) -> crate::Result<Outcome> {
    match setup {
        VaultSetup::Cli => vault_setup_cli(bed, narrator)?,
        VaultSetup::Http => vault_setup_http(bed, narrator).await?,
    }
    kubernetes_setup(bed, narrator).await?;

    narrator.step("The pod's identity: a backend-sa token for the Kubernetes API's own audience (what kubelet hands the CSI driver)");
    let backend_token = bed
        .service_account_token(NAMESPACE, SERVICE_ACCOUNT, KUBE_API_AUDIENCE)
        .await?;
    narrator.result("TokenRequest ok");

    let client = Client::new(&StoreConfig::new(bed.openbao().addr.parse()?))?;
    let mut sessions = Vec::new();
    for auth_path in AUTH_PATHS {
        narrator.step(&format!(
            "Log in at auth/{auth_path} as {ROLE} with the pod's token and read the password"
        ));
        let session = Session::new(
            client.clone(),
            Login {
                method: AuthMethod::Kubernetes,
                mount: auth_path.into(),
                role: ROLE.into(),
            },
            SecretString::from(backend_token.clone()),
        );
        let secret = session
            .read(SECRET_PATH, None)
            .await
            .with_context(|| format!("login and read via {auth_path}"))?;
        let value = secret.value("password")?;
        ensure!(
            value.expose() == PASSWORD.as_bytes(),
            "read a different password via {auth_path}"
        );
        // The guide's own value, shown because it is the point of the demo; never do this with
        // a real secret.
        narrator.result(&format!(
            "{SECRET_PATH}#password = {:?} (KV version {:?})",
            String::from_utf8_lossy(value.expose()),
            secret.version
        ));
        sessions.push(session);
    }
    Ok(Outcome {
        backend_token,
        sessions,
    })
}

fn bao(
    bed: &TestBed,
    narrator: &Narrator,
    args: &[&str],
    stdin: Option<&str>,
) -> crate::Result<String> {
    narrator.command(&format!("vault {}", args.join(" ")));
    let mut command = bed.bao()?;
    command.args(args);
    let output = match stdin {
        None => run_command(&mut command)?,
        Some(input) => run_with_stdin(&mut command, input)?,
    };
    narrator.result(&output);
    Ok(output)
}

fn run_with_stdin(command: &mut Command, input: &str) -> crate::Result<String> {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{command:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

fn vault_setup_cli(bed: &TestBed, narrator: &mut Narrator) -> crate::Result<()> {
    let kube = bed.kube();
    let ca = format!("kubernetes_ca_cert=@{}", kube.ca_cert.display());
    let host = format!("kubernetes_host={}", kube.url);

    narrator.step("Enable and create the Key-Value store");
    bao(
        bed,
        narrator,
        &["secrets", "enable", "-path=secret", "-version=2", "kv"],
        None,
    )?;
    narrator.step("Set the database password as the secret value");
    bao(
        bed,
        narrator,
        &[
            "kv",
            "put",
            "secret/database-for-python-app",
            &format!("password={PASSWORD}"),
        ],
        None,
    )?;
    narrator.step("Double-check that the password has been saved");
    let got = bao(
        bed,
        narrator,
        &[
            "kv",
            "get",
            "-field=password",
            "secret/database-for-python-app",
        ],
        None,
    )?;
    ensure!(got.trim() == PASSWORD, "kv get returned something else");
    for auth_path in AUTH_PATHS {
        narrator.step(&format!("Enable Kubernetes auth at {auth_path}"));
        bao(
            bed,
            narrator,
            &[
                "auth",
                "enable",
                &format!("-path={auth_path}"),
                "kubernetes",
            ],
            None,
        )?;
    }
    for auth_path in AUTH_PATHS {
        // Both auth paths point at the bed's one apiserver: the test bed has a single cluster.
        narrator.step(&format!(
            "Set the Kubernetes API address (and its CA) for {auth_path}"
        ));
        bao(
            bed,
            narrator,
            &["write", &format!("auth/{auth_path}/config"), &host, &ca],
            None,
        )?;
    }
    narrator.step("Create the \"backend\" policy that allows reading the secret");
    bao(
        bed,
        narrator,
        &["policy", "write", "backend", "-"],
        Some(POLICY),
    )?;
    for auth_path in AUTH_PATHS {
        narrator.step(&format!(
            "Create role {ROLE} at {auth_path}, bound to {NAMESPACE}/{SERVICE_ACCOUNT}"
        ));
        bao(
            bed,
            narrator,
            &[
                "write",
                &format!("auth/{auth_path}/role/{ROLE}"),
                &format!("bound_service_account_names={SERVICE_ACCOUNT}"),
                &format!("bound_service_account_namespaces={NAMESPACE}"),
                "policies=backend",
                "ttl=10m",
            ],
            None,
        )?;
    }
    Ok(())
}

async fn vault_setup_http(bed: &TestBed, narrator: &mut Narrator) -> crate::Result<()> {
    let openbao = bed.openbao();
    let kube = bed.kube();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let call = |method: reqwest::Method, path: String, body: Option<serde_json::Value>| {
        let http = http.clone();
        let url = format!("{}/v1/{path}", openbao.addr);
        let token = openbao.root_token.clone();
        async move {
            let text = match &body {
                Some(body) => format!(
                    "curl --header \"X-Vault-Token: ${{VAULT_TOKEN}}\" --request {method} --data '{body}' ${{VAULT_ADDR}}/v1/{path}"
                ),
                None => format!(
                    "curl --header \"X-Vault-Token: ${{VAULT_TOKEN}}\" ${{VAULT_ADDR}}/v1/{path}"
                ),
            };
            // NB: a freshly enabled KV v2 mount upgrades itself in the background and answers
            // 400 "Upgrading from non-versioned to versioned data" meanwhile; the CLI waits for
            // it, so a person running curl retries too.
            let mut attempts = 0;
            loop {
                let mut request = http
                    .request(method.clone(), &url)
                    .header("X-Vault-Token", &token);
                if let Some(body) = &body {
                    request = request.json(body);
                }
                let response = request.send().await?;
                let status = response.status();
                let text_body = response.text().await?;
                attempts += 1;
                if status == reqwest::StatusCode::BAD_REQUEST
                    && text_body.contains("Upgrading from non-versioned to versioned data")
                    && attempts < 50
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                ensure!(status.is_success(), "{text} answered {status}: {text_body}");
                return Ok::<_, anyhow::Error>((text, text_body));
            }
        }
    };
    let mut show = |title: &str, (command, body): (String, String)| {
        narrator.step(title);
        narrator.command(&command);
        narrator.result(&body);
    };

    show(
        "Enable and create the Key-Value store",
        call(
            reqwest::Method::POST,
            "sys/mounts/secret".into(),
            Some(json!({"type":"kv","options":{"version":"2"}})),
        )
        .await?,
    );
    show(
        "Set the database password as the secret value",
        call(
            reqwest::Method::PUT,
            "secret/data/database-for-python-app".into(),
            Some(json!({"data":{"password": PASSWORD}})),
        )
        .await?,
    );
    let (command, body) = call(
        reqwest::Method::GET,
        "secret/data/database-for-python-app".into(),
        None,
    )
    .await?;
    let saved: serde_json::Value = serde_json::from_str(&body)?;
    ensure!(
        saved["data"]["data"]["password"] == PASSWORD,
        "the saved password differs"
    );
    show(
        "Double-check that the password has been saved",
        (command, "password saved".into()),
    );
    for auth_path in AUTH_PATHS {
        show(
            &format!("Enable Kubernetes auth at {auth_path}"),
            call(
                reqwest::Method::POST,
                format!("sys/auth/{auth_path}"),
                Some(json!({"type":"kubernetes"})),
            )
            .await?,
        );
    }
    for auth_path in AUTH_PATHS {
        show(
            &format!("Set the Kubernetes API address (and its CA) for {auth_path}"),
            call(
                reqwest::Method::PUT,
                format!("auth/{auth_path}/config"),
                Some(json!({"kubernetes_host": kube.url, "kubernetes_ca_cert": kube.ca_pem})),
            )
            .await?,
        );
    }
    show(
        "Create the \"backend\" policy that allows reading the secret",
        call(
            reqwest::Method::PUT,
            "sys/policies/acl/backend".into(),
            Some(json!({"policy": POLICY})),
        )
        .await?,
    );
    for auth_path in AUTH_PATHS {
        show(
            &format!("Create role {ROLE} at {auth_path}, bound to {NAMESPACE}/{SERVICE_ACCOUNT}"),
            call(
                reqwest::Method::PUT,
                format!("auth/{auth_path}/role/{ROLE}"),
                Some(json!({
                    "bound_service_account_names": SERVICE_ACCOUNT,
                    "bound_service_account_namespaces": NAMESPACE,
                    "policies": "backend",
                    "ttl": "10m"
                })),
            )
            .await?,
        );
    }
    Ok(())
}

/// Runs kubectl as the narrated step shows it, and prints what it printed.
pub fn kubectl(bed: &TestBed, narrator: &Narrator, args: &[&str]) -> crate::Result<String> {
    narrator.command(&format!("kubectl {}", args.join(" ")));
    let output = run_command(bed.kubectl().args(args))?;
    narrator.result(&output);
    Ok(output)
}

async fn kubernetes_setup(bed: &TestBed, narrator: &mut Narrator) -> crate::Result<()> {
    let crd = workspace_path("manifests/crd/secretsstoreimport.yaml");
    let guide = |name: &str| {
        workspace_path(&format!("tests/fixtures/guide/{name}"))
            .display()
            .to_string()
    };

    narrator.step("Install the SecretsStoreImport CRD");
    kubectl(bed, narrator, &["apply", "-f", &crd.display().to_string()])?;
    kubectl(
        bed,
        narrator,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/secretsstoreimports.deckhouse.io",
        ],
    )?;

    narrator.step(&format!(
        "Create namespace {NAMESPACE} and the {SERVICE_ACCOUNT} ServiceAccount"
    ));
    kubectl(bed, narrator, &["create", "namespace", NAMESPACE])?;
    kubectl(bed, narrator, &["apply", "-f", &guide("backend-sa.yaml")])?;

    // The guide's FAQ: with no reviewer JWT configured, the store reviews the pod's token with
    // that same token, so the ServiceAccount itself needs system:auth-delegator.
    narrator
        .step("Let backend-sa log in to Vault: bind it to system:auth-delegator (the guide's FAQ)");
    kubectl(
        bed,
        narrator,
        &[
            "create",
            "clusterrolebinding",
            "backend-sa-auth-delegator",
            "--clusterrole=system:auth-delegator",
            &format!("--serviceaccount={NAMESPACE}:{SERVICE_ACCOUNT}"),
        ],
    )?;

    narrator.step("Create the python-backend SecretsStoreImport");
    kubectl(
        bed,
        narrator,
        &["apply", "-f", &guide("python-backend-ssi.yaml")],
    )?;
    kubectl(
        bed,
        narrator,
        &["-n", NAMESPACE, "get", "ssi", "python-backend"],
    )?;
    Ok(())
}

/// The role name of the documented dedicated-audience option: the guide's role with
/// `audience=vault`.
pub const DEDICATED_AUDIENCE_ROLE: &str = "backend-vault-audience";
/// The auth mount of that option: one of its own, so that the guide's mounts keep the guide's
/// set-up (the pod's own token reviews itself).
pub const DEDICATED_AUDIENCE_AUTH_PATH: &str = "dedicated-kube";

/// The documented option of a dedicated token audience (docs/install.md, "Token audience") at
/// [`DEDICATED_AUDIENCE_AUTH_PATH`]: a reviewer ServiceAccount of the store's own reviews the
/// tokens (the pod's own token cannot: the apiserver accepts only tokens for its own audience as
/// credentials), and the role [`DEDICATED_AUDIENCE_ROLE`] wants `audience`. The commands are
/// install.md's.
pub async fn use_a_dedicated_audience(bed: &TestBed, audience: &str) -> crate::Result<()> {
    let auth_path = DEDICATED_AUDIENCE_AUTH_PATH;
    run_command(bed.bao()?.args([
        "auth",
        "enable",
        &format!("-path={auth_path}"),
        "kubernetes",
    ]))?;
    let kubectl = |args: &[&str]| run_command(bed.kubectl().args(args));
    if kubectl(&[
        "-n",
        "kube-system",
        "get",
        "serviceaccount",
        "vault-reviewer",
    ])
    .is_err()
    {
        kubectl(&[
            "-n",
            "kube-system",
            "create",
            "serviceaccount",
            "vault-reviewer",
        ])?;
        kubectl(&[
            "create",
            "clusterrolebinding",
            "vault-reviewer-auth-delegator",
            "--clusterrole=system:auth-delegator",
            "--serviceaccount=kube-system:vault-reviewer",
        ])?;
        bed.apply_yaml(
            "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/service-account-token\nmetadata:\n  \
             name: vault-reviewer-token\n  namespace: kube-system\n  annotations:\n    \
             kubernetes.io/service-account.name: vault-reviewer\n",
        )?;
    }
    // The token controller fills the Secret in a moment.
    let token = crate::wait::until(
        Duration::from_secs(30),
        "the token controller to fill kube-system/vault-reviewer-token",
        || {
            let token = kubectl(&[
                "-n",
                "kube-system",
                "get",
                "secret",
                "vault-reviewer-token",
                "-o",
                "jsonpath={.data.token}",
            ])
            .map_err(|e| format!("{e:#}"))?;
            crate::wait::check(!token.trim().is_empty(), String::new)?;
            Ok(token)
        },
    )
    .await?;
    let jwt = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, token.trim())?;
    let reviewer_jwt = String::from_utf8(jwt)?;
    let kube = bed.kube();
    run_command(bed.bao()?.args([
        "write",
        &format!("auth/{auth_path}/config"),
        &format!("kubernetes_host={}", kube.url),
        &format!("kubernetes_ca_cert=@{}", kube.ca_cert.display()),
        &format!("token_reviewer_jwt={reviewer_jwt}"),
    ]))?;
    run_command(bed.bao()?.args([
        "write",
        &format!("auth/{auth_path}/role/{DEDICATED_AUDIENCE_ROLE}"),
        &format!("bound_service_account_names={SERVICE_ACCOUNT}"),
        &format!("bound_service_account_namespaces={NAMESPACE}"),
        &format!("audience={audience}"),
        "policies=backend",
        "ttl=10m",
    ]))?;
    Ok(())
}

/// Widens the guide's `backend` policy to every path below `secret/data/`, for tests that read
/// more than the guide's one secret (or a path that does not exist, to get a 404, not a 403).
pub fn allow_all_app_secrets(bed: &TestBed) -> crate::Result<()> {
    backend_policy(
        bed,
        "path \"secret/data/*\" { capabilities = [\"read\"] }\n",
    )
}

/// Replaces the guide's `backend` policy with `rules` (HCL), for tests that need more.
pub fn backend_policy(bed: &TestBed, rules: &str) -> crate::Result<()> {
    let policy = bed.dir().join("backend-policy.hcl");
    std::fs::write(&policy, rules)?;
    run_command(bed.bao()?.args(["policy", "write", "backend"]).arg(&policy))?;
    Ok(())
}

/// The injector benchmarks' bed: the guide played with the CLI, every app secret readable, a
/// second secret `secret/bench-other` (`api_key`, `user`) for references over two paths, and
/// the pod's token in a file. Returns the bed and that file.
pub async fn injector_bench_bed() -> crate::Result<(TestBed, std::path::PathBuf)> {
    let bed = TestBed::start().await?;
    let outcome = run(&bed, VaultSetup::Cli, &mut Narrator::quiet()).await?;
    allow_all_app_secrets(&bed)?;
    run_command(
        bed.bao()?
            .args(["kv", "put", "secret/bench-other", "api_key=k", "user=u"]),
    )?;
    let token = bed.dir().join("token");
    std::fs::write(&token, &outcome.backend_token)?;
    Ok((bed, token))
}
