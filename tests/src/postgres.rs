//! A real PostgreSQL server for the store's database secrets engine: Debian's package, a fresh
//! cluster in a temporary directory, listening on 127.0.0.1 on a free port, run as the
//! package's `postgres` user (PostgreSQL refuses to run as root).

use crate::process::{Process, free_port};
use anyhow::{Context, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The superuser the store's engine connects as.
pub const SUPERUSER: &str = "vault";

/// A running PostgreSQL server; dropping it shuts it down and removes its data.
#[derive(Debug)]
pub struct Postgres {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Password of [`SUPERUSER`].
    pub password: String,
    bin: PathBuf,
    process: Option<Process>,
    // NB: outside the bed's directory, which is root's alone; the server's user must reach it.
    _data: tempfile::TempDir,
}

/// Uid and gid of the package's `postgres` user.
fn postgres_user() -> crate::Result<(u32, u32)> {
    // host path: only read, for the package's user.
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres"))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
                .flatten()
        })
        .context(
            "no postgres user; install PostgreSQL with `apt-get install postgresql` \
             (tests/bed/provision.sh does)",
        )
}

/// The newest installed server's binaries, `/usr/lib/postgresql/<major>/bin`.
fn server_bin() -> crate::Result<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed; run tests/bed/provision.sh")?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let major = path.file_name()?.to_str()?.parse().ok()?;
            Some((major, path.join("bin")))
        })
        .filter(|(_, bin)| bin.join("postgres").is_file())
        .collect();
    majors.sort();
    majors
        .pop()
        .map(|(_, bin)| bin)
        .context("no PostgreSQL server binaries below /usr/lib/postgresql")
}

impl Postgres {
    /// Creates a cluster and starts it; its log goes to `log_dir`.
    pub async fn start(log_dir: &Path) -> crate::Result<Postgres> {
        let (uid, gid) = postgres_user()?;
        let bin = server_bin()?;
        let data = tempfile::Builder::new().prefix("ssi-pg-").tempdir()?;
        std::os::unix::fs::chown(data.path(), Some(uid), Some(gid))?;
        let password = format!("pg-{:016x}", fastrand::u64(..));
        let pwfile = data.path().join("pwfile");
        std::fs::write(&pwfile, &password)?;
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        let cluster = data.path().join("cluster");
        let as_postgres = |program: &str| {
            let mut command = Command::new(bin.join(program));
            command.uid(uid).gid(gid).current_dir(data.path());
            command
        };
        crate::run(
            as_postgres("initdb")
                .arg("-D")
                .arg(&cluster)
                .args(["-U", SUPERUSER, "--auth=scram-sha-256", "--no-sync"])
                .arg(format!("--pwfile={}", pwfile.display())),
        )
        .context("initdb")?;
        let port = free_port()?;
        let mut command = as_postgres("postgres");
        command.arg("-D").arg(&cluster).args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            &format!("port={port}"),
            "-c",
            &format!("unix_socket_directories={}", data.path().display()),
            "-c",
            "fsync=off",
            "-c",
            "dynamic_shared_memory_type=mmap",
        ]);
        let mut postgres = Postgres {
            port,
            password,
            bin,
            process: Some(Process::spawn(
                "postgres",
                command,
                &log_dir.join("postgres.log"),
            )?),
            _data: data,
        };
        let ready = crate::wait::until(
            Duration::from_secs(30),
            "PostgreSQL to accept logins",
            || match postgres.sql("select 1") {
                Ok(out) if out.trim() == "1" => Ok(()),
                Ok(out) => Err(out),
                Err(e) => Err(format!("{e:#}")),
            },
        )
        .await;
        if let Err(e) = ready {
            let log = postgres
                .process
                .as_mut()
                .map(|p| p.log_tail(20))
                .unwrap_or_default();
            bail!("{e:#}\n{log}");
        }
        Ok(postgres)
    }

    /// The connection URL the store's engine templates (`{{username}}`, `{{password}}`).
    pub fn connection_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Runs `sql` as the superuser; returns the rows unaligned, one per line.
    pub fn sql(&self, sql: &str) -> crate::Result<String> {
        self.sql_as(SUPERUSER, &self.password.clone(), sql)
    }

    /// Runs `sql` as `user` with `password` over TCP: proves credentials work.
    pub fn sql_as(&self, user: &str, password: &str, sql: &str) -> crate::Result<String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                user,
                "-d",
                "postgres",
                "-Atq",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()?;
        // NB: the error names the user and the statement, never the password.
        if !output.status.success() {
            bail!(
                "psql as {user} ({sql}) failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// The login roles other than the superuser: the users the engine created and not yet
    /// dropped.
    pub fn engine_users(&self) -> crate::Result<Vec<String>> {
        let out = self.sql(&format!(
            "select rolname from pg_roles where rolcanlogin and rolname <> '{SUPERUSER}' order by 1"
        ))?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A fast shutdown (SIGINT) leaves no shared memory behind, unlike the SIGKILL that
        // dropping the process sends to its group.
        if let Some(process) = &mut self.process {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(process.pid() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            for _ in 0..50 {
                if process.exited().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.process = None;
    }
}
