//! The real `ssi-injector` binary with a real ServiceAccount token file against OpenBao, set up
//! by the user's guide, starting real child programs (`env`, `sh`).

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_tests::csi::workspace_binary;
use ssi_tests::walkthrough::{
    self, AUTH_PATHS, DEDICATED_AUDIENCE_AUTH_PATH, NAMESPACE, Narrator, PASSWORD, ROLE,
    SERVICE_ACCOUNT, VaultSetup,
};
use ssi_tests::{SA_ISSUER, TestBed, VAULT_AUDIENCE, run, wait, workspace_path};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The guide's setup, a second version of the guide's secret, a policy that also covers a path
/// that does not exist, and the pod's token in a file (what kubelet projects).
async fn guide_bed() -> (TestBed, PathBuf) {
    let bed = TestBed::start().await.expect("test bed");
    let outcome = walkthrough::run(&bed, VaultSetup::Cli, &mut Narrator::quiet())
        .await
        .unwrap();
    run(bed.bao().unwrap().args([
        "kv",
        "put",
        "secret/database-for-python-app",
        "password=rotated-password",
        "username=app",
    ]))
    .unwrap();
    walkthrough::allow_all_app_secrets(&bed).unwrap();
    let token = bed.dir().join("token");
    std::fs::write(&token, &outcome.backend_token).unwrap();
    (bed, token)
}

/// The injector as the webhook configures it: its variables plus the app's own.
fn injector(bed: &TestBed, token: &Path, app_env: &[(&str, &str)], argv: &[&str]) -> Command {
    let mut command = Command::new(workspace_binary("ssi-injector").unwrap());
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SSI_INJECTOR_ADDR", &bed.openbao().addr)
        .env("SSI_INJECTOR_AUTH_PATH", AUTH_PATHS[0])
        .env("SSI_INJECTOR_ROLE", ROLE)
        .env("SSI_INJECTOR_TOKEN_PATH", token)
        .envs(app_env.iter().copied())
        .args(argv)
        .stdin(Stdio::null());
    command
}

fn output(command: &mut Command) -> (Output, String, String) {
    let output = command.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    (output, stdout, stderr)
}

fn lines(stdout: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    lines
}

#[tokio::test]
async fn values_versions_templates_and_env_from_path_reach_the_app_and_nothing_else_does() {
    let (bed, token) = guide_bed().await;
    let (result, stdout, stderr) = output(&mut injector(
        &bed,
        &token,
        &[
            (
                "DB_PASSWORD",
                "secrets-store:secret/data/database-for-python-app#password",
            ),
            (
                "FIRST_PASSWORD",
                "secrets-store:secret/data/database-for-python-app#password#1",
            ),
            (
                "DSN",
                "secrets-store:secret/data/database-for-python-app#postgres://${.username}:${.password}@db/app",
            ),
            (
                "GREETING",
                "user ${secrets-store:secret/data/database-for-python-app#username} says hi",
            ),
            ("PLAIN", "as-is"),
        ],
        &["env"],
    ));
    assert!(result.status.success(), "{stderr}");
    let env = lines(&stdout);
    for expected in [
        "DB_PASSWORD=rotated-password",
        &format!("FIRST_PASSWORD={PASSWORD}"),
        "DSN=postgres://app:rotated-password@db/app",
        "GREETING=user app says hi",
        "PLAIN=as-is",
        "PATH=/usr/bin:/bin",
    ] {
        assert!(env.contains(&expected), "{expected} missing from {env:?}");
    }
    assert!(
        !stdout.contains("SSI_INJECTOR_"),
        "configuration leaked into the app: {stdout}"
    );
    assert!(
        !stderr.contains("rotated-password") && !stderr.contains(PASSWORD),
        "{stderr}"
    );

    // env-from-path: every key of the path, but never in place of the container's own
    // reference (here version 1, "rotated-password" being the latest).
    let (result, stdout, stderr) = output(&mut injector(
        &bed,
        &token,
        &[
            (
                "SSI_INJECTOR_ENV_FROM_PATH",
                "secret/data/database-for-python-app",
            ),
            (
                "password",
                "secrets-store:secret/data/database-for-python-app#password#1",
            ),
        ],
        &["env"],
    ));
    assert!(result.status.success(), "{stderr}");
    let env = lines(&stdout);
    let own = format!("password={PASSWORD}");
    assert!(env.contains(&own.as_str()), "{env:?}");
    assert!(env.contains(&"username=app"), "{env:?}");
}

#[tokio::test]
async fn a_missing_secret_stops_the_app_unless_ignored() {
    let (bed, token) = guide_bed().await;
    let missing = [
        ("GONE", "secrets-store:secret/data/never-written#password"),
        ("KEPT", "plain"),
    ];
    let marker = bed.dir().join("app-ran");
    let touch = ["sh", "-c", "touch \"$0\"; env", marker.to_str().unwrap()];
    let (result, _, stderr) = output(&mut injector(&bed, &token, &missing, &touch));
    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr.contains("env GONE: secret secret/data/never-written does not exist"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the app must not start");

    // A missing key is not a 404: it fails even with ignore-missing-secrets.
    let (result, _, stderr) = output(&mut injector(
        &bed,
        &token,
        &[
            ("SSI_INJECTOR_IGNORE_MISSING_SECRETS", "true"),
            (
                "TYPO",
                "secrets-store:secret/data/database-for-python-app#pasword",
            ),
        ],
        &touch,
    ));
    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr.contains("has no key \"pasword\" (keys: \"password\", \"username\")"),
        "{stderr}"
    );
    assert!(!stderr.contains("rotated-password"), "{stderr}");
    assert!(!marker.exists());

    let mut ignoring = missing.to_vec();
    ignoring.push(("SSI_INJECTOR_IGNORE_MISSING_SECRETS", "true"));
    let (result, stdout, stderr) = output(&mut injector(&bed, &token, &ignoring, &touch));
    assert!(result.status.success(), "{stderr}");
    assert!(marker.exists());
    assert!(
        !stdout.contains("GONE=") && stdout.contains("KEPT=plain"),
        "{stdout}"
    );
    assert!(stderr.contains("env GONE left out"), "{stderr}");

    // A role the store refuses: a clear error, and no app.
    std::fs::remove_file(&marker).unwrap();
    let reference = [(
        "DB_PASSWORD",
        "secrets-store:secret/data/database-for-python-app#password",
    )];
    let (result, _, stderr) =
        output(injector(&bed, &token, &reference, &touch).env("SSI_INJECTOR_ROLE", "no-such-role"));
    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr.contains("no-such-role") || stderr.contains("400"),
        "{stderr}"
    );
    assert!(!marker.exists());

    // The documented option of a dedicated audience: a role that wants `vault` refuses the
    // default token, naming the audience the token has, and takes a token projected for `vault`.
    walkthrough::use_a_dedicated_audience(&bed, VAULT_AUDIENCE)
        .await
        .unwrap();
    let (result, _, stderr) = output(
        injector(&bed, &token, &reference, &touch)
            .env("SSI_INJECTOR_ROLE", "backend-vault-audience")
            .env("SSI_INJECTOR_AUTH_PATH", DEDICATED_AUDIENCE_AUTH_PATH),
    );
    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("token was issued for audience [{SA_ISSUER:?}]")),
        "{stderr}"
    );
    assert!(!marker.exists());
    let vault_token = bed.dir().join("vault-token");
    std::fs::write(
        &vault_token,
        bed.service_account_token(NAMESPACE, SERVICE_ACCOUNT, VAULT_AUDIENCE)
            .await
            .unwrap(),
    )
    .unwrap();
    let (result, stdout, stderr) = output(
        injector(&bed, &vault_token, &reference, &touch)
            .env("SSI_INJECTOR_ROLE", "backend-vault-audience")
            .env("SSI_INJECTOR_AUTH_PATH", DEDICATED_AUDIENCE_AUTH_PATH),
    );
    assert!(result.status.success(), "{stderr}");
    assert!(stdout.contains("DB_PASSWORD=rotated-password"), "{stdout}");
}

#[tokio::test]
async fn the_app_replaces_the_injector_gets_signals_and_its_exit_code_counts() {
    let (bed, token) = guide_bed().await;
    let reference = [(
        "DB_PASSWORD",
        "secrets-store:secret/data/database-for-python-app#password",
    )];

    let (result, _, _) = output(&mut injector(
        &bed,
        &token,
        &reference,
        &["sh", "-c", "exit 7"],
    ));
    assert_eq!(result.status.code(), Some(7));

    let (result, _, stderr) = output(&mut injector(
        &bed,
        &token,
        &reference,
        &["no-such-program"],
    ));
    assert_eq!(result.status.code(), Some(127));
    assert!(
        stderr.contains("failed to start no-such-program"),
        "{stderr}"
    );

    // exec: the pid we started is the app itself, so SIGTERM reaches it directly.
    let ready = bed.dir().join("trap-ready");
    let script = "trap 'echo got-term; exit 3' TERM; touch \"$0\"; while :; do sleep 0.1; done";
    let child = injector(
        &bed,
        &token,
        &reference,
        &["sh", "-c", script, ready.to_str().unwrap()],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    wait::until(Duration::from_secs(20), "the app to start", || {
        wait::check(ready.exists(), String::new)
    })
    .await
    .unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap();
    assert_eq!(comm.trim(), "sh", "the injector must have exec'd the app");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let result = child.wait_with_output().unwrap();
    assert_eq!(result.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&result.stdout).trim(), "got-term");
}

/// The shipped binary from `scripts/build-injector` (static, size-optimised).
fn static_injector() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    let path = target.join("x86_64-unknown-linux-gnu/injector/ssi-injector");
    assert!(
        path.is_file(),
        "{} is missing; build it with scripts/build-injector (scripts/test does)",
        path.display()
    );
    path
}

#[tokio::test]
async fn the_static_binary_reaches_the_store_by_host_name() {
    let (bed, token) = guide_bed().await;
    let binary = static_injector();
    let ldd = Command::new("ldd").arg(&binary).output().unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout) + String::from_utf8_lossy(&ldd.stderr);
    assert!(
        ldd.contains("statically linked") || ldd.contains("not a dynamic executable"),
        "{ldd}"
    );
    // NB: a static glibc binary resolves names without loading NSS modules only for files and dns.
    let by_name = bed.openbao().addr.replace("127.0.0.1", "localhost");
    let reference = [(
        "DB_PASSWORD",
        "secrets-store:secret/data/database-for-python-app#password",
    )];
    let configured = injector(&bed, &token, &reference, &["env"]);
    let mut command = Command::new(&binary);
    command
        .env_clear()
        .envs(configured.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("SSI_INJECTOR_ADDR", by_name)
        .args(configured.get_args());
    let (result, stdout, stderr) = output(&mut command);
    assert!(result.status.success(), "{stderr}");
    assert!(
        lines(&stdout).contains(&"DB_PASSWORD=rotated-password"),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_arm64_binaries_run_under_qemu_and_the_injector_resolves_a_reference() {
    let (bed, token) = guide_bed().await;
    // Debian's qemu-user-static, installed by provisioning; started directly, so the machine
    // needs no binfmt handler.
    let qemu = Path::new("/usr/bin/qemu-aarch64-static");
    assert!(
        qemu.is_file(),
        "{} is missing; apt-get install qemu-user-static (tests/bed/provision.sh does)",
        qemu.display()
    );
    let arm64 = |name: &str| {
        let path = workspace_path("target/images/bin/arm64").join(name);
        assert!(
            path.is_file(),
            "{} is missing; build it with scripts/build-images (scripts/test does)",
            path.display()
        );
        path
    };
    for name in ["ssi-csi", "ssi-webhook", "ssi-injector"] {
        let binary = arm64(name);
        let elf = std::fs::read(&binary).unwrap();
        // e_machine 183 (EM_AARCH64), and no interpreter: a static arm64 executable.
        assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 183, "{name}");
        assert!(
            !elf.windows(17).any(|w| w == b"/lib/ld-linux-aar"),
            "{name} is static"
        );
        let (result, stdout, stderr) = output(Command::new(qemu).arg(&binary).arg("--version"));
        assert!(result.status.success(), "{name}: {stderr}");
        assert!(
            stdout.contains(env!("CARGO_PKG_VERSION")),
            "{name}: {stdout}"
        );
    }
    // The injector, as the arm64 image runs it, resolves a reference against the bed's store
    // and execs the app (this machine's own `env`, which qemu hands to the kernel).
    let reference = [(
        "DB_PASSWORD",
        "secrets-store:secret/data/database-for-python-app#password",
    )];
    let configured = injector(&bed, &token, &reference, &["env"]);
    let mut command = Command::new(qemu);
    command
        .env_clear()
        .envs(configured.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .arg(arm64("ssi-injector"))
        .args(configured.get_args());
    let (result, stdout, stderr) = output(&mut command);
    assert!(result.status.success(), "{stderr}");
    assert!(
        lines(&stdout).contains(&"DB_PASSWORD=rotated-password"),
        "{stdout}"
    );
}

#[test]
fn copy_mode_installs_the_binary_for_the_app_containers() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(workspace_binary("ssi-injector").unwrap())
        .env_clear()
        .args(["copy"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let copied = dir.path().join("ssi-injector");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&copied).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        std::fs::read(workspace_binary("ssi-injector").unwrap()).unwrap()
    );
    // Without configuration and without `copy`, it refuses and says what is missing.
    let output = Command::new(&copied)
        .env_clear()
        .arg("env")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SSI_INJECTOR_ADDR") && stderr.contains("SSI_INJECTOR_ROLE"),
        "{stderr}"
    );
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// Children of `pid` that have died and not been reaped.
fn zombie_children(pid: u32) -> Vec<String> {
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str()) {
            zombies.push(stat);
        }
    }
    zombies
}

const WATCH_FOR_DATA: (&str, &str) = ("SSI_INJECTOR_MODE", "watch-for-data");

/// Starts the injector with `script` as the app (`sh -c script <ready file>`), its output piped,
/// and returns once the app has touched its ready file.
async fn start_app(
    bed: &TestBed,
    token: &Path,
    env: &[(&str, &str)],
    name: &str,
    script: &str,
) -> std::process::Child {
    let ready = bed.dir().join(name);
    let child = injector(
        bed,
        token,
        env,
        &["sh", "-c", script, ready.to_str().unwrap()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait::until(
        Duration::from_secs(20),
        "the app to touch its ready file",
        || wait::check(ready.exists(), String::new),
    )
    .await
    .unwrap();
    child
}

#[tokio::test]
async fn in_watch_mode_the_injector_stays_pid_1_forwards_signals_reaps_and_passes_exit_codes() {
    let (bed, token) = guide_bed().await;
    let env = [
        (
            "DB_PASSWORD",
            "secrets-store:secret/data/database-for-python-app#password",
        ),
        WATCH_FOR_DATA,
    ];
    let (result, _, stderr) = output(&mut injector(&bed, &token, &env, &["sh", "-c", "exit 7"]));
    assert_eq!(result.status.code(), Some(7), "{stderr}");
    let (result, _, stderr) = output(&mut injector(
        &bed,
        &token,
        &env,
        &["sh", "-c", "kill -KILL $$"],
    ));
    assert_eq!(result.status.code(), Some(128 + 9), "{stderr}");
    let (result, stdout, stderr) = output(&mut injector(&bed, &token, &env, &["env"]));
    assert!(result.status.success(), "{stderr}");
    assert!(lines(&stdout).contains(&"DB_PASSWORD=rotated-password"));
    assert!(!stdout.contains("SSI_INJECTOR_"), "{stdout}");

    // An orphan of the app (the subshell's `sleep`) is re-parented to the injector and reaped.
    let script = "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 3' TERM; \
                  (sleep 0.2 &); touch \"$0\"; while :; do sleep 0.1; done";
    let child = start_app(&bed, &token, &env, "watch-ready", script).await;
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap();
    assert_eq!(
        comm.trim(),
        "ssi-injector",
        "in watch mode the injector stays"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(zombie_children(child.id()), Vec::<String>::new());
    signal(child.id(), nix::sys::signal::Signal::SIGUSR1);
    std::thread::sleep(Duration::from_millis(500));
    signal(child.id(), nix::sys::signal::Signal::SIGTERM);
    let result = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert_eq!(
        result.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(lines(&stdout), ["got-term", "got-usr1"]);

    // The app starts as a shell would start it: nothing blocked, no standard signal ignored, so
    // an app without a trap dies of the forwarded SIGTERM (and of its own). NB: signals 32 and
    // 33 are glibc's own; a process that glibc's posix_spawn started (this test's injector) has
    // them ignored and no glibc call can change that, so only signals 1-31 are checked.
    let (result, stdout, stderr) = output(&mut injector(
        &bed,
        &token,
        &env,
        &["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"],
    ));
    assert!(result.status.success(), "{stderr}");
    let mask = |name: &str| {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"));
        u64::from_str_radix(line.trim(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{stdout}");
    assert_eq!(mask("SigIgn:") & 0x7fff_ffff, 0, "{stdout}");
    let (result, _, stderr) = output(&mut injector(
        &bed,
        &token,
        &env,
        &["sh", "-c", "kill -TERM $$"],
    ));
    assert_eq!(result.status.code(), Some(128 + 15), "{stderr}");
    let child = start_app(
        &bed,
        &token,
        &env,
        "sleep-ready",
        "touch \"$0\"; exec sleep 60",
    )
    .await;
    // A real-time signal is neither forwarded by name nor fatal: the injector ignores it.
    let rtmin3 = nix::libc::SIGRTMIN() + 3;
    let status = Command::new("kill")
        .arg(format!("-{rtmin3}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .is_ok_and(|s| !s.contains("State:\tZ")),
        "the injector survived the real-time signal"
    );
    signal(child.id(), nix::sys::signal::Signal::SIGTERM);
    let result = child.wait_with_output().unwrap();
    assert_eq!(
        result.status.code(),
        Some(128 + 15),
        "sleep, which sets no trap, got the forwarded SIGTERM: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&result.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

#[tokio::test]
async fn watch_for_data_restarts_the_app_after_a_kv_put_and_kills_one_that_will_not_stop() {
    let (bed, token) = guide_bed().await;
    let env = [
        (
            "DB_PASSWORD",
            "secrets-store:secret/data/database-for-python-app#password",
        ),
        WATCH_FOR_DATA,
        ("SSI_INJECTOR_POLL_INTERVAL", "1s"),
        ("SSI_INJECTOR_GRACE_PERIOD", "2s"),
        ("SSI_INJECTOR_LOG_LEVEL", "debug"),
    ];
    let script = "trap 'echo got-term; exit 0' TERM; echo \"started with $DB_PASSWORD\"; \
                  touch \"$0\"; while :; do sleep 0.1; done";
    let child = start_app(&bed, &token, &env, "data-ready", script).await;
    // A few unchanged polls leave the app alone.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        std::fs::metadata(format!("/proc/{}", child.id())).is_ok(),
        "the app was stopped though nothing changed"
    );
    run(bed.bao().unwrap().args([
        "kv",
        "put",
        "secret/database-for-python-app",
        "password=changed-in-vault",
        "username=app",
    ]))
    .unwrap();
    let changed_at = Instant::now();
    let result = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr),
    );
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(changed_at.elapsed() < Duration::from_secs(10));
    assert_eq!(
        lines(&stdout),
        ["got-term", "started with rotated-password"]
    );
    assert!(stderr.contains("secret data changed"), "{stderr}");
    assert!(stderr.contains("secrets unchanged"), "{stderr}");
    assert!(
        !stderr.contains("changed-in-vault") && !stderr.contains("rotated-password"),
        "{stderr}"
    );

    // The restarted container gets the new value; an app that ignores SIGTERM is killed after
    // the grace period.
    let script = "trap '' TERM; echo \"started with $DB_PASSWORD\"; touch \"$0\"; \
                  while :; do sleep 0.1; done";
    let child = start_app(&bed, &token, &env, "stubborn-ready", script).await;
    run(bed.bao().unwrap().args([
        "kv",
        "put",
        "secret/database-for-python-app",
        "password=changed-again",
    ]))
    .unwrap();
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&result.stdout).trim(),
        "started with changed-in-vault"
    );
    assert!(
        stderr.contains("did not stop within 2s; killing it"),
        "{stderr}"
    );
}

#[tokio::test]
async fn watch_for_lease_restarts_the_app_before_its_lease_ends() {
    let (bed, token) = guide_bed().await;
    // KV v1 turns a `ttl` field into a lease duration without a renewable lease: the app must
    // be restarted a grace period before it ends.
    run(bed
        .bao()
        .unwrap()
        .args(["secrets", "enable", "-path=leased", "-version=1", "kv"]))
    .unwrap();
    run(bed
        .bao()
        .unwrap()
        .args(["kv", "put", "leased/db", "password=short-lived", "ttl=4s"]))
    .unwrap();
    walkthrough::backend_policy(
        &bed,
        "path \"secret/data/*\" { capabilities = [\"read\"] }\npath \"leased/*\" { capabilities = [\"read\"] }\n",
    )
    .unwrap();
    let env = [
        ("DB_PASSWORD", "secrets-store:leased/db#password"),
        ("SSI_INJECTOR_MODE", "watch-for-lease"),
        ("SSI_INJECTOR_GRACE_PERIOD", "1s"),
    ];
    let started = Instant::now();
    let (result, stdout, stderr) = output(&mut injector(
        &bed,
        &token,
        &env,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo \"$DB_PASSWORD\"; while :; do sleep 0.1; done",
        ],
    ));
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert_eq!(stdout.trim(), "short-lived");
    assert!(
        stderr.contains("the lease of secret leased/db ends"),
        "{stderr}"
    );
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_secs(2) && lived < Duration::from_secs(4),
        "stopped after {lived:?}, not about a grace period before the 4 s lease ended"
    );
}

/// A Job's app under the injector (a watch mode keeps the injector as PID 1): when the app
/// ends, the injector ends with the app's exit code, and gives back the database user the app
/// was given: the lease is revoked and the engine drops the user, rather than at its TTL.
#[tokio::test]
async fn when_the_app_ends_the_injector_ends_with_it_and_revokes_its_database_user() {
    let (bed, token) = guide_bed().await;
    let postgres = ssi_tests::postgres::Postgres::start(bed.dir())
        .await
        .expect("PostgreSQL");
    ssi_tests::engines::database(&bed, &postgres, "1h", "2h").unwrap();
    walkthrough::backend_policy(
        &bed,
        &format!(
            "path \"secret/data/*\" {{ capabilities = [\"read\"] }}\n{}",
            ssi_tests::engines::DATABASE_POLICY
        ),
    )
    .unwrap();
    let env = [
        ("DB_USER", "secrets-store:database/creds/app#username"),
        ("SSI_INJECTOR_MODE", "watch-for-lease"),
    ];
    // The app reports its user, waits to be told to finish, and fails as a Job may.
    let script =
        "echo \"$DB_USER\"; touch \"$0\"; while [ ! -e \"$0.done\" ]; do sleep 0.1; done; exit 3";
    let child = start_app(&bed, &token, &env, "job-app", script).await;
    let users = postgres.engine_users().unwrap();
    assert_eq!(
        users.len(),
        1,
        "the app's user exists while it runs: {users:?}"
    );
    std::fs::write(bed.dir().join("job-app.done"), "").unwrap();
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(
        result.status.code(),
        Some(3),
        "the app's own code: {stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&result.stdout).trim(), users[0]);
    assert_eq!(
        postgres.engine_users().unwrap(),
        Vec::<String>::new(),
        "the user went with the app: {stderr}"
    );
}

#[test]
fn without_references_the_app_starts_without_asking_the_store() {
    // Env from a ConfigMap may hold no reference at all: then no token, no store is needed.
    let (result, stdout, stderr) = output(
        Command::new(workspace_binary("ssi-injector").unwrap())
            .env_clear()
            .env("SSI_INJECTOR_ADDR", "http://127.0.0.1:9")
            .env("SSI_INJECTOR_ROLE", "r")
            .env("SSI_INJECTOR_TOKEN_PATH", "/nonexistent/token")
            .env("FROM_CONFIG_MAP", "plain value")
            .arg("/usr/bin/env"),
    );
    assert!(result.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "FROM_CONFIG_MAP=plain value");
}

/// Deckhouse's write grammar against a real PKI engine: the certificate and the key come from
/// one issue call (they match), `secrets-store:login` hands the app a working store token, and
/// what the grammar refuses never starts the app.
#[tokio::test]
async fn deckhouse_writes_issue_a_matching_certificate_and_login_hands_over_the_token() {
    let (bed, token) = guide_bed().await;
    ssi_tests::engines::pki(&bed).unwrap();
    walkthrough::backend_policy(
        &bed,
        "path \"secret/data/*\" { capabilities = [\"read\"] }\n\
         path \"pki/issue/web\" { capabilities = [\"update\"] }\n",
    )
    .unwrap();

    let out = bed.dir().join("issued");
    std::fs::create_dir_all(&out).unwrap();
    let args = r#"{"common_name": "app.example.com", "ttl": "10m"}"#;
    let (result, _, stderr) = output(&mut injector(
        &bed,
        &token,
        &[
            (
                "CERT",
                &format!(">>secrets-store:pki/issue/web#certificate#{args}"),
            ),
            (
                "KEY",
                &format!(">>secrets-store:pki/issue/web#private_key#{args}"),
            ),
            ("VAULT_TOKEN", "secrets-store:login"),
        ],
        &[
            "sh",
            "-c",
            "printf '%s' \"$CERT\" > \"$0/cert.pem\"; printf '%s' \"$KEY\" > \"$0/key.pem\"; \
             printf '%s' \"$VAULT_TOKEN\" > \"$0/token\"",
            out.to_str().unwrap(),
        ],
    ));
    assert!(result.status.success(), "{stderr}");
    let public_key = |args: &[&str]| run(Command::new("openssl").args(args)).unwrap();
    let cert = out.join("cert.pem");
    let key = out.join("key.pem");
    assert_eq!(
        public_key(&["x509", "-noout", "-pubkey", "-in", cert.to_str().unwrap()]),
        public_key(&["pkey", "-pubout", "-in", key.to_str().unwrap()]),
        "the certificate and the key come from one issue call"
    );
    assert!(
        public_key(&["x509", "-noout", "-subject", "-in", cert.to_str().unwrap()])
            .contains("app.example.com")
    );
    let store_token = std::fs::read_to_string(out.join("token")).unwrap();
    let lookup = reqwest::Client::new()
        .get(format!("{}/v1/auth/token/lookup-self", bed.openbao().addr))
        .header("X-Vault-Token", store_token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status(), 200, "the handed-over token works");
    assert!(!stderr.contains(store_token.trim()), "{stderr}");

    // Refused before anything starts, naming the variable and the problem.
    for (name, value, expected) in [
        (
            "CERT",
            ">>secrets-store:pki/issue/web#certificate#not-json",
            "not a JSON object",
        ),
        (
            "DB",
            "secrets-store:secret/data/database-for-python-app#${ .password | b64enc }",
            "template function \"b64enc\"",
        ),
        ("TOKEN", "secrets-store:login", "VAULT_TOKEN only"),
    ] {
        let marker = bed.dir().join("started");
        let (result, _, stderr) = output(&mut injector(
            &bed,
            &token,
            &[(name, value)],
            &["touch", marker.to_str().unwrap()],
        ));
        assert!(!result.status.success(), "{value}");
        assert!(
            stderr.contains(&format!("env {name}")) && stderr.contains(expected),
            "{value}: {stderr}"
        );
        assert!(!marker.exists(), "the app must not start");
    }
    // In watch-for-data every poll would issue a new certificate and restart the app.
    let (result, _, stderr) = output(
        injector(
            &bed,
            &token,
            &[
                (
                    "CERT",
                    &format!(">>secrets-store:pki/issue/web#certificate#{args}"),
                ),
                ("SSI_INJECTOR_MODE", "watch-for-data"),
            ],
            &["true"],
        )
        .stdout(Stdio::null()),
    );
    assert!(!result.status.success());
    assert!(
        stderr.contains("issues a new secret at every poll"),
        "{stderr}"
    );
}
