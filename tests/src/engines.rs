//! The store's secret engines that issue secrets, set up on the bed's OpenBao as their own
//! documentation says: PKI with a root CA and a role, the database engine on a real PostgreSQL.

use crate::postgres::{Postgres, SUPERUSER};
use crate::{TestBed, run};

/// Where the database engine's role `app` issues users.
pub const DATABASE_PATH: &str = "database/creds/app";

/// The policy rules the guide's role needs for [`DATABASE_PATH`]: read it, and revoke its own
/// leases (the driver does at unpublish).
pub const DATABASE_POLICY: &str = "path \"database/creds/app\" { capabilities = [\"read\"] }\n\
     path \"sys/leases/revoke/database/creds/app/*\" { capabilities = [\"update\"] }\n";

fn bao(bed: &TestBed, args: &[&str]) -> crate::Result<String> {
    run(bed.bao()?.args(args))
}

/// The PKI engine at `pki/` with a root CA and role `web` issuing for `*.example.com`, at most
/// an hour.
pub fn pki(bed: &TestBed) -> crate::Result<()> {
    bao(bed, &["secrets", "enable", "pki"])?;
    bao(bed, &["secrets", "tune", "-max-lease-ttl=24h", "pki"])?;
    bao(
        bed,
        &[
            "write",
            "pki/root/generate/internal",
            "common_name=ssi-test-ca",
            "ttl=24h",
        ],
    )?;
    bao(
        bed,
        &[
            "write",
            "pki/roles/web",
            "allowed_domains=example.com",
            "allow_subdomains=true",
            "max_ttl=1h",
        ],
    )?;
    Ok(())
}

/// The database engine on `postgres`, with role `app` issuing login roles for `ttl`, at most
/// `max_ttl` (the store's duration syntax: `6s`, `1h`).
pub fn database(bed: &TestBed, postgres: &Postgres, ttl: &str, max_ttl: &str) -> crate::Result<()> {
    bao(bed, &["secrets", "enable", "database"])?;
    bao(
        bed,
        &[
            "write",
            "database/config/pg",
            "plugin_name=postgresql-database-plugin",
            &format!("connection_url={}", postgres.connection_url()),
            &format!("username={SUPERUSER}"),
            &format!("password={}", postgres.password),
            "allowed_roles=app",
        ],
    )?;
    bao(
        bed,
        &[
            "write",
            "database/roles/app",
            "db_name=pg",
            "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
            &format!("default_ttl={ttl}"),
            &format!("max_ttl={max_ttl}"),
        ],
    )?;
    Ok(())
}
