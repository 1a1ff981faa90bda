//! PostgreSQL for the tests: a database of the test's own on
//! `VODHOOK_TEST_PG` (created, dropped afterwards), or a whole server of the
//! test's own (`initdb` into a temporary directory, its own port) for a
//! test that restarts it or sets it up its own way (TLS).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The variable naming the server the tests create their databases on.
pub const VARIABLE: &str = "VODHOOK_TEST_PG";

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let slash = url[start..].find('/').map(|i| start + i);
    let query = url.find('?');
    match (slash, query) {
        (Some(slash), Some(query)) if slash < query => {
            format!("{}/{name}{}", &url[..slash], &url[query..])
        }
        (Some(slash), _) => format!("{}/{name}", &url[..slash]),
        (None, Some(query)) => format!("{}/{name}{}", &url[..query], &url[query..]),
        (None, None) => format!("{url}/{name}"),
    }
}

/// A connection without TLS.
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {url}: {error}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of one test's own; dropped (connections and all) when the
/// value goes.
#[derive(Debug)]
pub struct PgDatabase {
    admin: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl PgDatabase {
    /// A new database on `VODHOOK_TEST_PG`; `None`, after one line saying
    /// which variable to set, when it is unset.
    pub async fn create() -> Option<PgDatabase> {
        let Ok(admin) = std::env::var(VARIABLE) else {
            crate::helpers::skip(&format!(
                "set {VARIABLE} (e.g. postgres://postgres@127.0.0.1:5432/test) to run the PostgreSQL tests"
            ));
            return None;
        };
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let name = format!(
            "vodhook_t_{}_{now}_{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        client(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Some(PgDatabase {
            url: with_database(&admin, &name),
            admin,
            name,
        })
    }

    /// A connection to it, for what the store does not say.
    pub async fn client(&self) -> tokio_postgres::Client {
        client(&self.url).await
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A PostgreSQL server of the test's own: `initdb` into a temporary
/// directory (as the `postgres` user when run as root), listening on a
/// free port of 127.0.0.1; stopped when the value goes.
pub struct OwnServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// What an [`OwnServer`] gets between `initdb` and its first start.
#[derive(Debug, Default)]
pub struct ServerSetup<'a> {
    /// Files written into the data directory (mode 0600): name, contents.
    pub files: &'a [(&'a str, &'a str)],
    /// Lines appended to `postgresql.conf` (e.g. `ssl = on`).
    pub conf: &'a str,
    /// Lines put before the others of `pg_hba.conf` (the first match
    /// wins).
    pub hba_first: &'a str,
}

/// The directory of `initdb` and `pg_ctl`, if PostgreSQL is installed.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

impl OwnServer {
    /// Starts it; `None`, after one line saying why, when PostgreSQL's
    /// programs are not installed.
    pub fn start() -> Option<OwnServer> {
        OwnServer::start_with(&ServerSetup::default())
    }

    /// [`OwnServer::start`], with `setup` made after `initdb`.
    pub fn start_with(setup: &ServerSetup<'_>) -> Option<OwnServer> {
        let Some(bin) = postgres_bin() else {
            crate::helpers::skip("initdb not found under /usr/lib/postgresql (install postgresql)");
            return None;
        };
        let as_postgres = {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        };
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = OwnServer {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        server.set_up(setup);
        server.ctl("start");
        Some(server)
    }

    fn set_up(&self, setup: &ServerSetup<'_>) {
        use std::io::Write as _;
        use std::os::unix::fs::PermissionsExt as _;
        let data = self.data();
        for (name, contents) in setup.files {
            let path = data.join(name);
            std::fs::write(&path, contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if !setup.conf.is_empty() {
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            writeln!(conf, "{}", setup.conf).unwrap();
        }
        if !setup.hba_first.is_empty() {
            let hba = data.join("pg_hba.conf");
            let rest = std::fs::read_to_string(&hba).unwrap();
            std::fs::write(&hba, format!("{}\n{rest}", setup.hba_first)).unwrap();
        }
        if self.as_postgres {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let output = if self.as_postgres {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&program).args(args).output()
        }
        .unwrap();
        assert!(
            output.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `pg_ctl start|stop|restart`, waiting until it is done.
    pub fn ctl(&self, action: &str) {
        let data = self.data();
        let socket_dir: &Path = self.dir.path();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100",
            self.port,
            socket_dir.display()
        );
        let log = self.dir.path().join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-m",
                "fast",
                "-w",
                action,
            ],
        );
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let data = self.data();
        let program = self.bin.join("pg_ctl");
        let args = [
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ];
        let _ = if self.as_postgres {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&program).args(args).output()
        };
    }
}
