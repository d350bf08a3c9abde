//! Leased and issued secrets on a CSI volume (issue 17), proven with the store's real engines:
//! the database secrets engine against a real PostgreSQL, and the PKI engine, with the real
//! driver played by the harness as kubelet.

// Tests fail by panicking, helpers included.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use ssi_core::{SecretFile, SecretsStoreImport, SecretsStoreImportSpec};
use ssi_tests::csi::{CsiDriver, DriverOptions, PodVolume, create_pod, publish, unpublish};
use ssi_tests::postgres::Postgres;
use ssi_tests::walkthrough::{self, NAMESPACE, ROLE, SERVICE_ACCOUNT};
use ssi_tests::{TestBed, run, wait, workspace_path};
use std::process::Command;
use std::time::{Duration, Instant};

use ssi_tests::engines::{self, DATABASE_PATH as DB_PATH};

async fn guide_bed() -> TestBed {
    walkthrough::guide_bed().await.expect("the guide's bed")
}

fn bao(bed: &TestBed, args: &[&str]) -> String {
    run(bed.bao().unwrap().args(args)).unwrap()
}

/// The guide's role again, with a token TTL of `ttl`.
fn role_token_ttl(bed: &TestBed, ttl: &str) {
    bao(
        bed,
        &[
            "write",
            &format!("auth/main-kube/role/{ROLE}"),
            &format!("bound_service_account_names={SERVICE_ACCOUNT}"),
            &format!("bound_service_account_namespaces={NAMESPACE}"),
            "policies=backend",
            &format!("ttl={ttl}"),
        ],
    );
}

/// The database engine on `postgres` (role `app`: `ttl`, at most `max_ttl`), and the guide's
/// policy widened to it.
fn database_engine(bed: &TestBed, postgres: &Postgres, ttl: &str, max_ttl: &str) {
    engines::database(bed, postgres, ttl, max_ttl).unwrap();
    walkthrough::backend_policy(bed, engines::DATABASE_POLICY).unwrap();
}

/// The driver, whose rotation interval is long: leases and certificates follow their own
/// clock.
async fn start_driver(bed: &TestBed) -> CsiDriver {
    CsiDriver::start(
        bed,
        DriverOptions {
            rotation_interval: "1h".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Applies a documented example SSI (docs/examples), after checking that
/// docs/secretsstoreimport.md shows the same spec; `adjust` edits its text first.
fn apply_example(bed: &TestBed, file: &str, adjust: impl FnOnce(String) -> String) {
    let example =
        std::fs::read_to_string(workspace_path(&format!("docs/examples/{file}"))).unwrap();
    let spec = &example[example.find("spec:").unwrap()..];
    let docs = std::fs::read_to_string(workspace_path("docs/secretsstoreimport.md")).unwrap();
    assert!(
        docs.contains(spec),
        "docs/secretsstoreimport.md shows {file}'s spec"
    );
    bed.apply_yaml(&adjust(example)).unwrap();
}

/// The guide's bed with the PKI engine, its role `web` issuable by the guide's policy.
async fn pki_bed() -> TestBed {
    let bed = guide_bed().await;
    engines::pki(&bed).unwrap();
    walkthrough::backend_policy(
        &bed,
        "path \"pki/issue/web\" { capabilities = [\"update\"] }\n",
    )
    .unwrap();
    bed
}

fn db_ssi(bed: &TestBed) {
    apply_example(bed, "ssi-database.yaml", |text| text);
}

fn read(volume: &PodVolume, file: &str) -> String {
    String::from_utf8(std::fs::read(volume.target.join(file)).unwrap()).unwrap()
}

/// The volume's files of one generation (`..data`'s target once), so that a swap between two
/// reads cannot mix two generations.
fn generation(volume: &PodVolume, files: &[&str]) -> Vec<String> {
    let current = std::fs::read_link(volume.target.join("..data")).unwrap();
    let dir = volume.target.join(current);
    files
        .iter()
        .map(|file| String::from_utf8(std::fs::read(dir.join(file)).unwrap()).unwrap())
        .collect()
}

/// The volume's database user and password, after proving that they log in to PostgreSQL and
/// that the rendered file holds the same.
fn working_credentials(postgres: &Postgres, volume: &PodVolume) -> (String, String) {
    let [user, password, env]: [String; 3] =
        generation(volume, &["username", "password", "app.env"])
            .try_into()
            .unwrap();
    let me = postgres
        .sql_as(&user, &password, "select current_user")
        .unwrap_or_else(|e| panic!("{}'s credentials must log in: {e:#}", volume.pod));
    assert_eq!(me.trim(), user);
    assert_eq!(
        env,
        format!("DATABASE_URL=postgres://{user}:{password}@db:5432/app\n"),
        "the rendered file comes from the same response"
    );
    (user, password)
}

fn working_user(postgres: &Postgres, volume: &PodVolume) -> String {
    working_credentials(postgres, volume).0
}

/// The lease ids the store holds for `DB_PATH`.
fn leases(bed: &TestBed) -> Vec<String> {
    let out = run(bed.bao().unwrap().args([
        "list",
        "-format=json",
        &format!("sys/leases/lookup/{DB_PATH}/"),
    ]))
    .unwrap_or_else(|_| "[]".into());
    serde_json::from_str(&out).unwrap_or_default()
}

/// The lease id the driver saved in `volume`'s record (the record holds no value).
fn recorded_lease(driver: &CsiDriver, volume: &PodVolume, password: &str) -> String {
    let dir = driver.state_dir.join("volumes");
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        if !text.contains(&volume.volume_id) {
            continue;
        }
        assert!(!text.contains(password), "the record holds no secret value");
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        return record["held"][0]["lease"]["id"]
            .as_str()
            .expect("the lease id is recorded")
            .to_owned();
    }
    panic!("no record of {}", volume.volume_id);
}

/// `last_renewal` of a lease, as the store reports it.
fn last_renewal(bed: &TestBed, lease_id: &str) -> Option<String> {
    let out = bao(
        bed,
        &[
            "write",
            "-format=json",
            "sys/leases/lookup",
            &format!("lease_id={lease_id}"),
        ],
    );
    let lookup: serde_json::Value = serde_json::from_str(&out).unwrap();
    lookup["data"]["last_renewal"].as_str().map(str::to_owned)
}

/// A lease id's last part, as the store lists it under its path.
fn lease_number(lease_id: &str) -> String {
    lease_id.rsplit('/').next().unwrap().to_owned()
}

/// Unpublishes `volume`, whose lease's database user is `user`: the user is dropped at once,
/// not at the lease's TTL.
async fn unpublish_drops_the_user(
    driver: &CsiDriver,
    volume: &PodVolume,
    postgres: &Postgres,
    user: &str,
) {
    unpublish(driver, volume).await.expect("unpublish");
    wait::until(Duration::from_secs(5), "the user to be dropped", || {
        let users = postgres.engine_users().unwrap();
        wait::check(!users.iter().any(|u| u == user), || format!("{users:?}"))
    })
    .await
    .unwrap();
}

async fn store_requests(driver: &CsiDriver, operation: &str) -> f64 {
    driver
        .metric(&format!(
            "ssi_csi_store_requests_total{{operation=\"{operation}\",result=\"ok\"}}"
        ))
        .await
        .unwrap_or(0.0)
}

/// A second store in front of the bed's: it forwards connections until [`SecondStore::go_dark`],
/// then drops the forwarded ones and holds every new one without an answer, as a store behind
/// a dead route does.
struct SecondStore {
    address: String,
    dark: std::sync::Arc<std::sync::atomic::AtomicBool>,
    forwarded: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SecondStore {
    async fn start(bed: &TestBed) -> SecondStore {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let upstream = bed.openbao().addr.trim_start_matches("http://").to_owned();
        let dark = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forwarded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_dark, tasks) = (dark.clone(), forwarded.clone());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if is_dark.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let upstream = upstream.clone();
                let forward = tokio::spawn(async move {
                    if let Ok(mut store) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut store).await;
                    }
                });
                tasks.lock().unwrap().push(forward.abort_handle());
            }
        });
        SecondStore {
            address,
            dark,
            forwarded,
            task,
        }
    }

    /// From now on nothing answers: open connections are cut, new ones are held silent.
    fn go_dark(&self) {
        self.dark.store(true, std::sync::atomic::Ordering::SeqCst);
        for forward in self.forwarded.lock().unwrap().drain(..) {
            forward.abort();
        }
    }
}

impl Drop for SecondStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_blackholed_second_store_delays_no_lease_renewal_beyond_a_fetch_deadline() {
    let bed = guide_bed().await;
    assert!(bed.openbao().addr.starts_with("http://"), "the bed's store");
    let postgres = Postgres::start(bed.dir()).await.expect("PostgreSQL");
    // A 36 s lease is renewed at two thirds of it: 12 s to spare, more than a rotation interval
    // (3 s) and a fetch's deadline (5 store timeouts of 1 s) together. (With 24 s, 8 s to
    // spare, a busy CI machine once saw the lease at 1 s left: the interval had been forgotten.)
    database_engine(&bed, &postgres, "36s", "1h");
    walkthrough::backend_policy(
        &bed,
        &format!(
            "{}path \"secret/data/*\" {{ capabilities = [\"read\"] }}\n",
            engines::DATABASE_POLICY
        ),
    )
    .unwrap();
    db_ssi(&bed);
    let second = SecondStore::start(&bed).await;
    let mut spec = SecretsStoreImportSpec::new(
        ROLE,
        vec![SecretFile::new(
            "password",
            "secret/data/database-for-python-app",
            "password",
        )],
    );
    spec.address = Some(second.address.clone());
    let mut ssi = SecretsStoreImport::new("elsewhere", spec);
    ssi.metadata.namespace = Some(NAMESPACE.into());
    bed.apply_yaml(&serde_yaml::to_string(&ssi).unwrap())
        .unwrap();
    let driver = CsiDriver::start(
        &bed,
        DriverOptions {
            rotation_interval: "3s".into(),
            store_timeout: "1s".into(),
            extra_args: vec!["--allowed-store-addresses".into(), second.address.clone()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let leased = create_pod(&bed, &driver, NAMESPACE, "db-1", SERVICE_ACCOUNT, "db")
        .await
        .unwrap();
    publish(&bed, &driver, &leased).await.expect("publish");
    // More volumes at the second store than the driver rotates at once (16).
    for i in 0..20 {
        let volume = create_pod(
            &bed,
            &driver,
            NAMESPACE,
            &format!("elsewhere-{i}"),
            SERVICE_ACCOUNT,
            "elsewhere",
        )
        .await
        .unwrap();
        publish(&bed, &driver, &volume).await.expect("publish");
    }
    let user = working_user(&postgres, &leased);
    let lease = recorded_lease(&driver, &leased, &read(&leased, "password"));
    second.go_dark();
    let dark = Instant::now();

    // Through two lease periods: the same user logs in all along, its lease renewed in time
    // although every rotation cycle meets twenty volumes whose store never answers.
    let mut least_left = u64::MAX;
    while dark.elapsed() < Duration::from_secs(72) {
        assert_eq!(working_user(&postgres, &leased), user, "kept and working");
        let lookup = bao(
            &bed,
            &[
                "write",
                "-format=json",
                "sys/leases/lookup",
                &format!("lease_id={lease}"),
            ],
        );
        let lookup: serde_json::Value = serde_json::from_str(&lookup).unwrap();
        let left = lookup["data"]["ttl"].as_u64().expect("the lease is alive");
        least_left = least_left.min(left);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let failed = driver
        .metric("ssi_csi_rotations_total{result=\"failed\"}")
        .await
        .unwrap_or(0.0);
    eprintln!(
        "[blackhole] 72 s: the lease never had less than {least_left} s left; {failed} rotations \
         failed at the dark store"
    );
    assert!(
        failed >= 20.0,
        "the dark store's volumes were tried: {failed}"
    );
    assert!(
        least_left >= 2,
        "renewed before its end: {least_left} s left at worst"
    );
    assert!(store_requests(&driver, "renew").await >= 2.0);
}

#[tokio::test]
async fn database_users_are_kept_per_volume_renewed_replaced_before_max_ttl_and_revoked() {
    let bed = guide_bed().await;
    let postgres = Postgres::start(bed.dir()).await.expect("PostgreSQL");
    // The store's token lives shorter than the lease's max TTL: leases die with the token that
    // obtained them, so the driver must keep its token alive for them.
    role_token_ttl(&bed, "12s");
    // Renewed at two thirds of 9 s: 3 s to spare for a busy machine (6 s left 2 s, and a CI run
    // once saw the lease expire and the volume get a new user).
    database_engine(&bed, &postgres, "9s", "45s");
    db_ssi(&bed);
    let driver = start_driver(&bed).await;
    let first = create_pod(&bed, &driver, NAMESPACE, "db-1", SERVICE_ACCOUNT, "db")
        .await
        .unwrap();
    let second = create_pod(&bed, &driver, NAMESPACE, "db-2", SERVICE_ACCOUNT, "db")
        .await
        .unwrap();
    // Together, as a Deployment's pods arrive: a leased read is never shared between them.
    let (published_first, published_second) = tokio::join!(
        publish(&bed, &driver, &first),
        publish(&bed, &driver, &second)
    );
    let published = Instant::now();
    published_first.expect("publish first");
    published_second.expect("publish second");

    let (user, password) = working_credentials(&postgres, &first);
    let other = working_user(&postgres, &second);
    assert_ne!(user, other, "two pods never share a database user");
    assert_eq!(leases(&bed).len(), 2, "one lease per volume");
    let lease = recorded_lease(&driver, &first, &read(&first, "password"));
    let reads = store_requests(&driver, "read").await;
    assert_eq!(reads, 2.0, "one read per volume");

    // Through two lease periods and the token's renewal: the same user, working, renewed.
    while published.elapsed() < Duration::from_secs(20) {
        assert_eq!(working_user(&postgres, &first), user, "kept, not re-read");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert!(
        last_renewal(&bed, &lease).is_some(),
        "the store saw the lease renewed"
    );
    assert_eq!(store_requests(&driver, "read").await, reads, "no re-read");
    assert!(store_requests(&driver, "renew").await >= 4.0);
    assert!(
        store_requests(&driver, "renew_token").await >= 1.0,
        "the token that holds the leases was renewed"
    );

    // Near the max TTL (45 s) renewal stops extending the lease: a new user, before the old
    // one stops working.
    let replaced = wait::until(Duration::from_secs(40), "a new database user", || {
        let now = working_user(&postgres, &first);
        wait::check(now != user, || format!("still {now}"))
    })
    .await;
    replaced.unwrap();
    let replaced_after = published.elapsed();
    assert!(
        replaced_after < Duration::from_secs(45),
        "replaced before the old user's max TTL, after {replaced_after:?}"
    );
    postgres
        .sql_as(&user, &password, "select 1")
        .expect("the old user still logs in meanwhile");

    // Unpublish revokes the volume's lease: its user is dropped at once, not at its TTL.
    let second_user = working_user(&postgres, &second);
    unpublish_drops_the_user(&driver, &second, &postgres, &second_user).await;
    assert!(
        !driver.log().contains("was not revoked"),
        "{}",
        driver.log()
    );
    unpublish(&driver, &first).await.expect("unpublish");
}

#[tokio::test]
async fn a_restarted_driver_renews_the_leases_it_recorded_with_the_token_it_kept() {
    let bed = guide_bed().await;
    let postgres = Postgres::start(bed.dir()).await.expect("PostgreSQL");
    // The lease outlives the store's token: only a driver that kept its token across the
    // restart (on a tmpfs) can go on renewing it.
    role_token_ttl(&bed, "10s");
    database_engine(&bed, &postgres, "8s", "1h");
    db_ssi(&bed);
    let mut driver = start_driver(&bed).await;
    let volume = create_pod(&bed, &driver, NAMESPACE, "db-1", SERVICE_ACCOUNT, "db")
        .await
        .unwrap();
    publish(&bed, &driver, &volume).await.expect("publish");
    let user = working_user(&postgres, &volume);
    let lease = recorded_lease(&driver, &volume, &read(&volume, "password"));
    assert_eq!(
        last_renewal(&bed, &lease),
        None,
        "not renewed before the restart"
    );

    driver.kill();
    driver.restart().await.expect("restart");
    // Kubelet's next republish hands over a token; nothing is read again.
    publish(&bed, &driver, &volume).await.expect("republish");
    let restarted = Instant::now();
    // Past the old token's TTL, through three lease periods.
    while restarted.elapsed() < Duration::from_secs(20) {
        assert_eq!(working_user(&postgres, &volume), user);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        last_renewal(&bed, &lease).is_some(),
        "the restarted driver renewed the recorded lease"
    );
    assert_eq!(
        store_requests(&driver, "read").await,
        0.0,
        "no new credentials"
    );
    assert_eq!(
        leases(&bed),
        [lease_number(&lease)],
        "only the volume's lease"
    );

    unpublish_drops_the_user(&driver, &volume, &postgres, &user).await;
}

#[tokio::test]
async fn a_restarted_store_keeps_the_volumes_user_and_lease_and_the_driver_renews_on() {
    // A store that keeps its data on disk, as production stores do: restarted, it has its
    // leases and tokens again once unsealed.
    let bed = walkthrough::guide_bed_from(TestBed::builder().persistent_store())
        .await
        .expect("the guide's bed with a persistent store");
    let postgres = Postgres::start(bed.dir()).await.expect("PostgreSQL");
    database_engine(&bed, &postgres, "9s", "1h");
    db_ssi(&bed);
    let driver = start_driver(&bed).await;
    let volume = create_pod(&bed, &driver, NAMESPACE, "db-1", SERVICE_ACCOUNT, "db")
        .await
        .unwrap();
    publish(&bed, &driver, &volume).await.expect("publish");
    let user = working_user(&postgres, &volume);
    let lease = recorded_lease(&driver, &volume, &read(&volume, "password"));
    let renewed_before = last_renewal(&bed, &lease);

    // Killed, started again, sealed for 3 s (the driver's renewals meanwhile fail), then
    // unsealed by its operator.
    let store = ssi_tests::process::restart(
        bed.openbao().pid(),
        "openbao",
        &bed.dir().join("openbao-restarted.log"),
    )
    .expect("the store restarted");
    tokio::time::sleep(Duration::from_secs(3)).await;
    bed.openbao().unseal().await.expect("unsealed");
    let back = Instant::now();
    // Through two lease periods after it is back: the same user, working.
    while back.elapsed() < Duration::from_secs(20) {
        assert_eq!(working_user(&postgres, &volume), user, "kept, not re-read");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let renewed_after = last_renewal(&bed, &lease);
    assert!(
        renewed_after.is_some() && renewed_after != renewed_before,
        "the lease was renewed after the restart: {renewed_before:?} then {renewed_after:?}"
    );
    assert_eq!(store_requests(&driver, "read").await, 1.0, "no new user");
    assert_eq!(
        store_requests(&driver, "login").await,
        1.0,
        "the token outlived the restart: no new login"
    );
    assert_eq!(
        leases(&bed),
        [lease_number(&lease)],
        "only the volume's lease"
    );

    unpublish_drops_the_user(&driver, &volume, &postgres, &user).await;
    drop(store);
}

fn openssl(args: &[&str], dir: &std::path::Path) -> String {
    run(Command::new("openssl").args(args).current_dir(dir)).unwrap()
}

/// The files of one generation of `volume`, as a reader that wants them consistent reads them:
/// copied from the directory `..data` names, again if `..data` moved on meanwhile (the driver
/// swaps whole generations; a file read before a swap and another after would not match).
fn one_generation(volume: &PodVolume, files: &[&str]) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let data = volume.target.join("..data");
    for _ in 0..100 {
        let before = std::fs::read_link(&data).expect("the volume's ..data link");
        let copied = files.iter().all(|file| {
            std::fs::copy(
                volume.target.join(&before).join(file),
                copy.path().join(file),
            )
            .is_ok()
        });
        if copied && std::fs::read_link(&data).is_ok_and(|after| after == before) {
            return copy;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "no generation of {} stayed long enough to be copied",
        volume.target.display()
    );
}

/// The certificate's serial and notAfter, and whether its key is the one in `tls.key`.
fn certificate(volume: &PodVolume) -> (String, String) {
    let generation = one_generation(volume, &["tls.crt", "tls.key", "ca.crt"]);
    let dir = generation.path();
    let from_cert = openssl(&["x509", "-in", "tls.crt", "-noout", "-pubkey"], dir);
    let from_key = openssl(&["pkey", "-in", "tls.key", "-pubout"], dir);
    assert_eq!(from_cert, from_key, "the certificate's key is tls.key");
    let verified = openssl(&["verify", "-CAfile", "ca.crt", "tls.crt"], dir);
    assert!(verified.contains("tls.crt: OK"), "{verified}");
    let serial = openssl(&["x509", "-in", "tls.crt", "-noout", "-serial"], dir);
    let end = openssl(&["x509", "-in", "tls.crt", "-noout", "-enddate"], dir);
    (serial.trim().to_owned(), end.trim().to_owned())
}

#[tokio::test]
async fn a_one_second_certificate_is_reissued_at_most_every_ten_seconds_and_its_events_add_up() {
    let bed = pki_bed().await;
    // A tenant asks for certificates of one second: each is due again at once.
    apply_example(&bed, "ssi-pki.yaml", |text| {
        text.replace("ttl: 72h", "ttl: 1s")
    });
    let driver = start_driver(&bed).await;
    let volume = create_pod(&bed, &driver, NAMESPACE, "web-2", SERVICE_ACCOUNT, "tls")
        .await
        .unwrap();
    publish(&bed, &driver, &volume).await.expect("publish");
    let published = Instant::now();
    tokio::time::sleep(Duration::from_secs(32)).await;
    let issues = store_requests(&driver, "write").await;
    let floor = ssi_csi::held::MIN_REISSUE_INTERVAL;
    eprintln!(
        "[1s ttl] {issues} issues in {:?} (floor {floor:?})",
        published.elapsed()
    );
    // The publish's, then one per floor: 4 in 32 s (one more if a cycle falls on the edge),
    // where the certificate's own clock would ask for about 48.
    assert!((3.0..=5.0).contains(&issues), "{issues} issues in 32 s");
    // Each reissue changed the files; their Events add up on one Event per message.
    let events = run(bed
        .kubectl()
        .args(["get", "events", "-n", NAMESPACE, "-o", "json"]))
    .unwrap();
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let rotated: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "web-2" && e["reason"] == "SecretRotated")
        .collect();
    let counts: Vec<i64> = rotated
        .iter()
        .map(|e| e["count"].as_i64().unwrap_or(1))
        .collect();
    eprintln!("[1s ttl] SecretRotated Events: {counts:?}");
    assert_eq!(rotated.len(), 1, "one Event, counted up: {counts:?}");
    assert!(
        counts[0] as f64 >= issues - 2.0,
        "{counts:?} for {issues} issues"
    );
    unpublish(&driver, &volume).await.expect("unpublish");
}

#[tokio::test]
async fn a_certificate_its_key_and_ca_come_from_one_issue_and_rotate_before_expiry() {
    let bed = pki_bed().await;
    apply_example(&bed, "ssi-pki.yaml", |text| {
        assert_eq!(text.matches("ttl: 72h").count(), 3);
        // NB: 18 s: renewed at two thirds (12 s), past the 10 s re-issue floor, 6 s to spare on
        // a loaded machine.
        text.replace("ttl: 72h", "ttl: 18s")
    });
    let driver = start_driver(&bed).await;
    let volume = create_pod(&bed, &driver, NAMESPACE, "web-1", SERVICE_ACCOUNT, "tls")
        .await
        .unwrap();
    publish(&bed, &driver, &volume).await.expect("publish");
    let (serial, end) = certificate(&volume);
    assert_eq!(
        store_requests(&driver, "write").await,
        1.0,
        "three files, one issue"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(volume.target.join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o440);

    // Two thirds into its 18 s: a new certificate, again matching its key, before the old
    // one's notAfter.
    let issued_at = Instant::now();
    wait::until(Duration::from_secs(26), "a new certificate", || {
        let (now, _) = certificate(&volume);
        wait::check(now != serial, || format!("still {now}"))
    })
    .await
    .unwrap();
    assert!(
        issued_at.elapsed() < Duration::from_secs(18),
        "rotated before {end}, after {:?}",
        issued_at.elapsed()
    );
    assert_eq!(store_requests(&driver, "write").await, 2.0);
    unpublish(&driver, &volume).await.expect("unpublish");
}
