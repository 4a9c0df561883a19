//! The databases of `eventfold-bench postgres`: each is created by the bench on the PostgreSQL
//! it is given and dropped at the end, also after a failure (see [`Database`]).

use std::str::FromStr as _;

use anyhow::Context as _;
use tokio_postgres::{Client, Config};

/// A connection to the PostgreSQL server's maintenance database (the one `--postgres` names),
/// from which the run's databases are created and dropped.
pub struct Admin {
    client: Client,
    url: String,
    /// Version and the settings that decide what a commit costs, for the header.
    pub facts: String,
}

impl Admin {
    pub async fn connect(url: &str) -> anyhow::Result<Admin> {
        // Checked before connecting: the run's databases are named by rewriting this URL.
        database_url(url, "postgres")?;
        let config =
            Config::from_str(url).with_context(|| format!("bad PostgreSQL URL {url:?}"))?;
        let client = crate::postgres::connect(&config).await?;
        let mut facts = Vec::new();
        for setting in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "commit_delay",
            "shared_buffers",
            "max_connections",
        ] {
            let v: String = client
                .query_one(&format!("SHOW {setting}"), &[])
                .await
                .with_context(|| format!("cannot read the setting {setting}"))?
                .try_get(0)?;
            facts.push(format!("{setting} = {v}"));
        }
        Ok(Admin {
            client,
            url: url.to_owned(),
            facts: facts.join(", "),
        })
    }

    /// Creates the database `eventfold_bench_{pid}_{what}` (dropping a leftover of that name).
    pub async fn create(&self, what: &str) -> anyhow::Result<Database> {
        let name = format!("eventfold_bench_{}_{what}", std::process::id());
        // Two statements: DROP DATABASE refuses to run in the implicit transaction of a
        // multi-statement query.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            self.client
                .batch_execute(&sql)
                .await
                .with_context(|| format!("cannot create the database {name}"))?;
        }
        Ok(Database {
            url: database_url(&self.url, &name)?,
            admin_url: self.url.clone(),
            name,
            dropped: false,
        })
    }
}

/// How long [`Database::drop_now`] lets connections to the database close by themselves.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A database of this run: dropped by [`Database::drop_now`], or on drop (from a thread of its
/// own, with `WITH (FORCE)`, so that connections left to it do not keep it).
#[derive(Debug)]
pub struct Database {
    pub name: String,
    /// The database's URL (the admin URL with this database).
    pub url: String,
    admin_url: String,
    dropped: bool,
}

impl Database {
    /// Drops the database now; call after every server on it has stopped.
    ///
    /// Connections this process just dropped close on their own tasks: the database is dropped
    /// without `FORCE` while they do (for up to [`CLOSE_WAIT`]), so that none of them is cut
    /// off with an error, and with `FORCE` after that.
    pub async fn drop_now(mut self, admin: &Admin) -> anyhow::Result<()> {
        self.dropped = true;
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        while std::time::Instant::now() < deadline {
            let plain = format!("DROP DATABASE IF EXISTS {}", self.name);
            if admin.client.batch_execute(&plain).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(CLOSE_WAIT / 20).await;
        }
        admin
            .client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .with_context(|| format!("cannot drop the database {}", self.name))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (name, url) = (self.name.clone(), self.admin_url.clone());
        // Drop may run inside the bench's runtime: drop the database from a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let config = Config::from_str(&url)?;
                let client = crate::postgres::connect(&config).await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "warning: could not drop the database {}: {dropped:?}; drop it by hand",
                self.name
            );
        }
    }
}

/// `url` (a `postgres://` or `postgresql://` URL) naming database `db` instead of its own.
pub fn database_url(url: &str, db: &str) -> anyhow::Result<String> {
    let scheme_end = ["postgres://", "postgresql://"]
        .iter()
        .find(|s| url.starts_with(**s))
        .map(|s| s.len())
        .with_context(|| {
            format!(
                "--postgres {url:?} is not a postgres:// URL: the bench creates its databases \
                 beside the one it names, so give postgres://user@host:port/database"
            )
        })?;
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{db}{query}", &base[..authority_end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        let u = |url| database_url(url, "x").expect("a PostgreSQL URL");
        assert_eq!(
            u("postgresql://postgres@127.0.0.1:5432/postgres"),
            "postgresql://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(u("postgres://h"), "postgres://h/x");
        assert_eq!(u("postgres://h/"), "postgres://h/x");
        assert_eq!(
            u("postgres://u:p@h:1/db?sslmode=disable"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(
            u("postgres://h?connect_timeout=3"),
            "postgres://h/x?connect_timeout=3"
        );
        let e = format!("{:#}", database_url("host=h dbname=d", "x").unwrap_err());
        assert!(e.contains("postgres://"), "{e}");
    }
}
