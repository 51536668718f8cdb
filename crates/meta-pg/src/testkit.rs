//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, `pg_ctl
//! start` on a free loopback port, trust authentication for loopback only, stopped (and the
//! directory removed) when dropped. Uses Debian's `postgresql` package (`scripts/test.sh`
//! installs it); panics with what is missing rather than skipping.
//!
//! PostgreSQL refuses to run as root, so under root the server runs as the package's
//! `postgres` user (`runuser`), in a directory it owns.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Throwaway {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_user: Option<&'static str>,
}

impl Throwaway {
    /// Starts a server; panics with the reason when it cannot.
    pub fn start() -> Self {
        let bin = pg_bin().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found (looked for FEIYUN_PG_BIN and \
                 /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("feiyun-pg-")
            .tempdir_in(std::env::var_os("FEIYUN_PG_TMP").unwrap_or_else(|| "/var/tmp".into()))
            .expect("a temporary directory for PostgreSQL");
        let as_user = is_root().then_some("postgres");
        let data = dir.path().join("data");
        if let Some(u) = as_user {
            run(Command::new("chown").arg(u).arg(dir.path()));
        }
        let mut init = command(as_user, &bin.join("initdb"));
        init.args([
            "-A",
            "trust",
            "-U",
            "feiyun",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data);
        run(&mut init);
        let port = free_port();
        let log = dir.path().join("server.log");
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{}' \
             -c max_connections=200 -c fsync=on -c synchronous_commit=on",
            dir.path().display()
        );
        let mut start = command(as_user, &bin.join("pg_ctl"));
        start
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts, "start"]);
        let ok = start
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("PostgreSQL did not start:\n{text}");
        }
        // A server held in a test binary's static is never dropped: a watchdog stops it
        // when this process is gone, however it ended.
        let watchdog = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; {} {} -w -m immediate -D '{}' stop; rm -rf '{}'",
            std::process::id(),
            as_user
                .map(|u| format!("runuser -u {u} --"))
                .unwrap_or_default(),
            bin.join("pg_ctl").display(),
            data.display(),
            dir.path().display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let s = Self {
            dir,
            bin,
            port,
            as_user,
        };
        s.psql_in("postgres", "CREATE DATABASE feiyun");
        s
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for a fresh database of this server (each test its own schema).
    pub fn fresh_database(&self, name: &str) -> String {
        self.psql_in("postgres", &format!("CREATE DATABASE {name}"));
        format!("postgres://feiyun@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one SQL command in the `feiyun` database as the superuser, panicking on error.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("feiyun", sql)
    }

    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "feiyun",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server fast (open sessions are cut), as a crash of the database would.
    pub fn stop(&self) {
        let mut c = command(self.as_user, &self.bin.join("pg_ctl"));
        c.args(["-w", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let _ = c.status();
    }

    /// Starts it again on the same port and data.
    pub fn restart(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories='{}' -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let mut c = command(self.as_user, &self.bin.join("pg_ctl"));
        c.args(["-w", "-t", "60", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &opts, "start"])
            .stdout(std::process::Stdio::null());
        run(&mut c);
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pg_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FEIYUN_PG_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn command(as_user: Option<&str>, program: &Path) -> Command {
    match as_user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn run(c: &mut Command) {
    let out = c.output().expect("command runs");
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
