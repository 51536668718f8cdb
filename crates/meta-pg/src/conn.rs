//! Connections to the database: a private runtime that drives their sockets, a bounded pool,
//! and a per-connection cache of prepared statements.
//!
//! The metadata trait's reads are blocking calls made from any thread (worker threads of the
//! server's runtime included, for the quick point reads the services do inline), so every
//! query future is spawned onto a small runtime this store owns and its answer awaited with a
//! plain thread park. Nothing here ever starts a nested runtime, which would panic on a
//! server worker thread.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use feiyun_meta::MetaError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::PgError;

/// A live session: the client, the backend's id for logs, and the statements it prepared.
pub(crate) struct Conn {
    client: Arc<Client>,
    statements: HashMap<&'static str, Statement>,
}

pub(crate) struct Pool {
    /// `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    setup: String,
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
    /// Longest one statement may take, client side: a database that stops answering (a cut
    /// network) fails the request instead of holding a connection until TCP gives up.
    pub(crate) op_timeout: Duration,
    checkout_timeout: Duration,
}

struct PoolState {
    idle: Vec<Conn>,
    open: usize,
}

/// Settings the store was opened with.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Server-side `statement_timeout`, and (plus a margin) the client-side bound.
    pub statement_timeout: Duration,
    /// How long a caller waits for a free connection before failing.
    pub checkout_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 32,
            statement_timeout: Duration::from_secs(10),
            checkout_timeout: Duration::from_secs(10),
        }
    }
}

impl Pool {
    pub(crate) fn new(
        config: tokio_postgres::Config,
        tls: tokio_postgres_rustls::MakeRustlsConnect,
        options: &PoolOptions,
    ) -> Result<Self, PgError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("meta-pg")
            .enable_all()
            .build()
            .map_err(|e| PgError::Connect(format!("starting the database runtime: {e}")))?;
        let ms = options.statement_timeout.as_millis().max(1);
        Ok(Self {
            rt: Some(rt),
            config,
            tls,
            // A statement outside an explicit transaction is a read (one statement is one
            // snapshot) or a commit marker's insert: REPEATABLE READ gives it its own snapshot
            // without the predicate locks SERIALIZABLE would take, which only make concurrent
            // commits fail. Commits say SERIALIZABLE themselves. The timeout bounds what one
            // query can hold.
            setup: format!(
                "SET statement_timeout = {ms}; \
                 SET default_transaction_isolation = 'repeatable read'"
            ),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            max: options.max_connections.max(1),
            op_timeout: options.statement_timeout + Duration::from_secs(5),
            checkout_timeout: options.checkout_timeout,
        })
    }

    /// Runs a future on the store's runtime and waits for it, bounded by the client-side
    /// timeout.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> Result<T, PgError> {
        let limit = self.op_timeout;
        let Some(rt) = self.rt.as_ref() else {
            return Err(PgError::Connect("the store is closing".into()));
        };
        // The result comes back over a plain channel, not the task's JoinHandle: a JoinHandle
        // polled on a worker of the caller's runtime obeys that task's cooperative budget,
        // and once the budget is spent it defers its wake-up until the task yields, which a
        // thread blocked here never does (a resync's long task hung on it).
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let r = match tokio::time::timeout(limit, f).await {
                Ok(r) => r,
                Err(_) => Err(PgError::Timeout),
            };
            let _ = tx.send(r);
        });
        let wait = move || {
            rx.recv()
                .unwrap_or_else(|_| Err(PgError::Connect("database task failed".into())))
        };
        // On a worker of a multi-threaded runtime, hand the worker's other tasks to another
        // thread for the round trip instead of stalling them behind it.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    fn connect(&self) -> Result<Conn, PgError> {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let setup = self.setup.clone();
        let client = self.run(async move {
            let (client, connection) = config
                .connect(tls)
                .await
                .map_err(|e| PgError::Connect(e.to_string()))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "metadata database connection closed");
                }
            });
            client.batch_execute(&setup).await.map_err(PgError::from)?;
            // Every statement here is a point or range read or write on a primary key, whose
            // one good plan does not depend on the values: planning it again for each
            // execution (PostgreSQL's default for the first runs, and for good whenever it
            // guesses a custom plan is cheaper, as it does for `k = ANY($1)`) was a third of
            // the database's CPU. Best effort: an engine without the setting plans its own way.
            if let Err(e) = client
                .batch_execute("SET plan_cache_mode = force_generic_plan")
                .await
            {
                tracing::debug!(error = %e, "the database does not take plan_cache_mode");
            }
            // A generic plan is made once per session, often while a table is still nearly
            // empty, when a sequential scan looks cheapest; it then stays, and a group's
            // `k = ANY($1)` check read scanned whole object tables (measured: 1,100 scans
            // of ~13,000 rows each in 30,000 PUTs). Every statement here has a primary-key
            // path, which this makes the planner take. Best effort, as above.
            if let Err(e) = client.batch_execute("SET enable_seqscan = off").await {
                tracing::debug!(error = %e, "the database does not take enable_seqscan");
            }
            // That setting inflates the estimate of the one statement without a key path
            // (trimming old commit markers) past the JIT threshold, and compiling it with
            // LLVM took a tenth of the database's CPU; no statement here gains from JIT.
            if let Err(e) = client.batch_execute("SET jit = off").await {
                tracing::debug!(error = %e, "the database does not take jit");
            }
            Ok(client)
        })?;
        Ok(Conn {
            client: Arc::new(client),
            statements: HashMap::new(),
        })
    }

    /// A connection, opened if none is idle and the pool is below its bound; waits up to the
    /// checkout timeout otherwise.
    pub(crate) fn get(self: &Arc<Self>) -> Result<Pooled, PgError> {
        let deadline = Instant::now() + self.checkout_timeout;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            while let Some(c) = state.idle.pop() {
                if !c.client.is_closed() {
                    return Ok(Pooled {
                        pool: self.clone(),
                        conn: Some(c),
                    });
                }
                state.open -= 1;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(c) => Ok(Pooled {
                        pool: self.clone(),
                        conn: Some(c),
                    }),
                    Err(e) => {
                        self.release_slot();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PgError::PoolExhausted(self.max));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// An idle connection, if there is one now; never waits and never connects.
    pub(crate) fn try_get_idle(self: &Arc<Self>) -> Option<Pooled> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = state.idle.pop() {
            if !c.client.is_closed() {
                return Some(Pooled {
                    pool: self.clone(),
                    conn: Some(c),
                });
            }
            state.open -= 1;
        }
        None
    }

    fn release_slot(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.open -= 1;
        drop(state);
        self.freed.notify_one();
    }

    fn put_back(&self, conn: Conn) {
        if conn.client.is_closed() {
            self.release_slot();
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.idle.push(conn);
        drop(state);
        self.freed.notify_one();
    }
}

impl Drop for Pool {
    /// The store may be dropped on a thread of the server's runtime, where dropping another
    /// runtime would block and panic: its tasks (the sessions' drivers) are let go instead.
    /// The last reference may also go in one of this runtime's own tasks (a session's
    /// background `ROLLBACK`), which must not shut down the runtime it runs on: that drop
    /// happens on a thread of its own.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("meta-pg-close".into())
                    .spawn(move || rt.shutdown_background());
            } else {
                rt.shutdown_background();
            }
        }
    }
}

/// Splits our own parameters off a `postgres://` URL and builds the connector: without
/// `sslmode` the session is plain (as on a loopback or a private network); `sslmode=require`
/// or `prefer` encrypt and check the server's certificate, against the system's CAs or the
/// one CA file `sslrootcert=` names. Unlike libpq, a certificate is never accepted unchecked.
pub(crate) fn parse_url(
    url: &str,
) -> Result<
    (
        tokio_postgres::Config,
        tokio_postgres_rustls::MakeRustlsConnect,
    ),
    PgError,
> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(PgError::Url(
            "expected postgres://user:password@host:port/database".into(),
        ));
    }
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    let mut root_file = None;
    let mut sslmode_given = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", v)) => root_file = Some(v.to_string()),
            // `prefer` would fall back to plaintext when the server (or someone between)
            // declines TLS: asking for TLS at all means requiring it.
            Some(("sslmode", "prefer" | "verify-ca" | "verify-full")) => {
                sslmode_given = true;
                kept.push("sslmode=require");
            }
            Some(("sslmode", _)) => {
                sslmode_given = true;
                kept.push(pair);
            }
            _ => kept.push(pair),
        }
    }
    if !sslmode_given {
        // A CA file named is a request for checked TLS, not plaintext.
        kept.push(if root_file.is_some() {
            "sslmode=require"
        } else {
            "sslmode=disable"
        });
    }
    let rebuilt = format!("{base}?{}", kept.join("&"));
    let mut config: tokio_postgres::Config = rebuilt
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
    if config.get_hosts().is_empty() {
        return Err(PgError::Url("the URL names no host".into()));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config.application_name("feiyun");
    let mut roots = rustls::RootCertStore::empty();
    match root_file {
        Some(path) => {
            let pem = std::fs::read(&path)
                .map_err(|e| PgError::Url(format!("sslrootcert {path}: {e}")))?;
            let mut any = false;
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: rustls::pki_types::CertificateDer<'static> =
                    cert.map_err(|e| PgError::Url(format!("sslrootcert {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| PgError::Url(format!("sslrootcert {path}: {e}")))?;
                any = true;
            }
            if !any {
                return Err(PgError::Url(format!(
                    "sslrootcert {path} holds no certificate"
                )));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Url(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((config, tokio_postgres_rustls::MakeRustlsConnect::new(tls)))
}

/// A checked-out connection, returned to the pool when dropped. A connection whose session
/// state is unknown (a transaction left open by an error) is closed instead: see
/// [`Pooled::discard`].
pub(crate) struct Pooled {
    pool: Arc<Pool>,
    conn: Option<Conn>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if std::thread::panicking() {
                // Dropped by a panic (inside a replan, say): the session may be inside a
                // transaction that the next user's statements would then run in.
                drop(c);
                self.pool.release_slot();
            } else {
                self.pool.put_back(c);
            }
        }
    }
}

impl Pooled {
    fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a pooled connection is present until dropped")
    }

    /// Closes the session rather than pooling it.
    pub(crate) fn discard(mut self) {
        if self.conn.take().is_some() {
            self.pool.release_slot();
        }
    }

    /// A prepared statement for `sql`, prepared once per connection.
    fn statement(&mut self, sql: &'static str) -> Result<Statement, PgError> {
        if let Some(s) = self.conn().statements.get(sql) {
            return Ok(s.clone());
        }
        let client = self.conn().client.clone();
        let s = self
            .pool
            .run(async move { client.prepare(sql).await.map_err(PgError::from) })?;
        self.conn().statements.insert(sql, s.clone());
        Ok(s)
    }

    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Vec<Row>, PgError> {
        let s = self.statement(sql)?;
        let client = self.conn().client.clone();
        self.pool.run(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(Param::as_sql).collect();
            client.query(&s, &refs).await.map_err(PgError::from)
        })
    }

    pub(crate) fn execute(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<u64, PgError> {
        let s = self.statement(sql)?;
        let client = self.conn().client.clone();
        self.pool.run(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(Param::as_sql).collect();
            client.execute(&s, &refs).await.map_err(PgError::from)
        })
    }

    /// Sends every operation without waiting for the answers in between (tokio-postgres
    /// pipelines the requests of one client in the order they are first polled: one round
    /// trip for all of them) and returns each one's answer in order. The outer error is the session's
    /// (lost, timed out); an inner one is the database's answer to that statement. After a
    /// statement fails inside a transaction, the database answers the later ones with
    /// 25P02 and a `COMMIT` among them with `ROLLBACK`, which is not an error here: the
    /// caller must read every answer before the last.
    pub(crate) fn pipeline(
        &mut self,
        ops: Vec<Op>,
    ) -> Result<Vec<Result<Answer, PgError>>, PgError> {
        self.prepare_all(&ops)?;
        let mut ready = Vec::with_capacity(ops.len());
        for op in ops {
            ready.push(match op {
                Op::Simple(sql) => Ready::Simple(sql),
                Op::Query(sql, params) => Ready::Query(self.statement(sql)?, params),
                Op::Execute(sql, params) => Ready::Execute(self.statement(sql)?, params),
            });
        }
        let client = self.conn().client.clone();
        self.pool
            .run(async move { Ok(run_ready(&client, &ready).await) })
    }

    /// [`Pooled::pipeline`] without blocking the caller's thread: the session travels to the
    /// store's runtime, which prepares what it lacks, runs the operations and sends it back
    /// with the answers. A session that fails or times out there is closed, not returned.
    pub(crate) async fn pipeline_async(
        mut self,
        ops: Vec<Op>,
    ) -> Result<(Pooled, Vec<Result<Answer, PgError>>), PgError> {
        let limit = self.pool.op_timeout;
        let Some(rt) = self.pool.rt.as_ref().map(|rt| rt.handle().clone()) else {
            return Err(PgError::Connect("the store is closing".into()));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        rt.spawn(async move {
            let ran = tokio::time::timeout(limit, self.pipeline_here(ops))
                .await
                .unwrap_or(Err(PgError::Timeout));
            let _ = tx.send(match ran {
                Ok(answers) => Ok((self, answers)),
                Err(e) => {
                    self.discard();
                    Err(e)
                }
            });
        });
        rx.await
            .unwrap_or_else(|_| Err(PgError::Connect("database task failed".into())))
    }

    /// Prepares what this session lacks and runs `ops`, on the store's runtime.
    async fn pipeline_here(
        &mut self,
        ops: Vec<Op>,
    ) -> Result<Vec<Result<Answer, PgError>>, PgError> {
        let client = self.conn().client.clone();
        let mut ready = Vec::with_capacity(ops.len());
        for op in ops {
            let (sql, params, query) = match op {
                Op::Simple(sql) => {
                    ready.push(Ready::Simple(sql));
                    continue;
                }
                Op::Query(sql, params) => (sql, params, true),
                Op::Execute(sql, params) => (sql, params, false),
            };
            let statement = match self.conn().statements.get(sql) {
                Some(s) => s.clone(),
                None => {
                    let s = client.prepare(sql).await.map_err(PgError::from)?;
                    self.conn().statements.insert(sql, s.clone());
                    s
                }
            };
            ready.push(match query {
                true => Ready::Query(statement, params),
                false => Ready::Execute(statement, params),
            });
        }
        Ok(run_ready(&client, &ready).await)
    }

    /// Prepares, in one round trip, the statements of `ops` this session has not prepared.
    fn prepare_all(&mut self, ops: &[Op]) -> Result<(), PgError> {
        let mut missing: Vec<&'static str> = Vec::new();
        for op in ops {
            if let Op::Query(sql, _) | Op::Execute(sql, _) = op
                && !self.conn().statements.contains_key(sql)
                && !missing.contains(sql)
            {
                missing.push(sql);
            }
        }
        if missing.len() < 2 {
            // One (or none) is prepared on first use, by `statement`.
            return Ok(());
        }
        let client = self.conn().client.clone();
        let texts = missing.clone();
        let prepared = self.pool.run(async move {
            let all = futures::future::join_all(texts.iter().map(|sql| client.prepare(sql))).await;
            all.into_iter()
                .map(|r| r.map_err(PgError::from))
                .collect::<Result<Vec<_>, _>>()
        })?;
        for (sql, s) in missing.into_iter().zip(prepared) {
            self.conn().statements.insert(sql, s);
        }
        Ok(())
    }

    /// Ends the session's business with `sql` (a `ROLLBACK` of a read-only transaction) on
    /// the store's runtime, without the caller waiting for the answer; the session returns
    /// to the pool once the database has answered, or is closed if it did not.
    pub(crate) fn finish_in_background(mut self, sql: &'static str) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let pool = Arc::downgrade(&self.pool);
        let limit = self.pool.op_timeout;
        let Some(rt) = self.pool.rt.as_ref() else {
            self.pool.release_slot();
            return;
        };
        rt.spawn(async move {
            let ended = tokio::time::timeout(limit, conn.client.batch_execute(sql)).await;
            let Some(pool) = pool.upgrade() else {
                return;
            };
            match ended {
                Ok(Ok(())) => pool.put_back(conn),
                _ => {
                    drop(conn);
                    pool.release_slot();
                }
            }
        });
    }

    /// Statements without parameters (transaction control, DDL), not prepared.
    pub(crate) fn simple(&mut self, sql: &str) -> Result<(), PgError> {
        let client = self.conn().client.clone();
        let sql = sql.to_owned();
        self.pool
            .run(async move { client.batch_execute(&sql).await.map_err(PgError::from) })
    }
}

/// One statement of a [`Pooled::pipeline`].
pub(crate) enum Op {
    /// Text without parameters (transaction control), sent unprepared.
    Simple(&'static str),
    /// A statement whose rows are wanted.
    Query(&'static str, Vec<Param>),
    /// A statement whose rows are not wanted.
    Execute(&'static str, Vec<Param>),
}

/// The database's answer to one [`Op`].
pub(crate) enum Answer {
    Done,
    Rows(Vec<Row>),
}

impl Answer {
    pub(crate) fn rows(&self) -> &[Row] {
        match self {
            Answer::Rows(r) => r,
            Answer::Done => &[],
        }
    }
}

/// Sends every operation at once and collects the answers in order.
async fn run_ready(client: &Client, ready: &[Ready]) -> Vec<Result<Answer, PgError>> {
    let futures = ready.iter().map(|op| async move {
        match op {
            Ready::Simple(sql) => client.batch_execute(sql).await.map(|()| Answer::Done),
            Ready::Query(s, params) => {
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(Param::as_sql).collect();
                client.query(s, &refs).await.map(Answer::Rows)
            }
            Ready::Execute(s, params) => {
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(Param::as_sql).collect();
                client.execute(s, &refs).await.map(|_| Answer::Done)
            }
        }
    });
    futures::future::join_all(futures)
        .await
        .into_iter()
        .map(|r| r.map_err(PgError::from))
        .collect()
}

/// An [`Op`] with its statement prepared.
enum Ready {
    Simple(&'static str),
    Query(Statement, Vec<Param>),
    Execute(Statement, Vec<Param>),
}

/// An owned statement parameter (the query runs on another thread).
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Bytes(Vec<u8>),
    /// A `bytea[]`.
    BytesList(Vec<Vec<u8>>),
    Int(i64),
}

impl Param {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Bytes(b) => b,
            Param::BytesList(l) => l,
            Param::Int(i) => i,
        }
    }
}

impl From<PgError> for MetaError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Connect(_) | PgError::Timeout | PgError::PoolExhausted(_) => {
                MetaError::Unavailable(e.to_string())
            }
            _ => MetaError::Storage(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_url;
    use tokio_postgres::config::SslMode;

    #[test]
    fn asking_for_tls_in_any_form_requires_it() {
        let mode = |url: &str| parse_url(url).expect("parses").0.get_ssl_mode();
        let base = "postgres://u:p@db.example:5432/feiyun";
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["db.example".into()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let with_ca = format!("?sslrootcert={}", ca.display());
        assert_eq!(mode(base), SslMode::Disable);
        for q in [
            "?sslmode=require",
            "?sslmode=prefer",
            "?sslmode=verify-full",
            "?sslmode=verify-ca",
            with_ca.as_str(),
        ] {
            assert_eq!(mode(&format!("{base}{q}")), SslMode::Require, "{q}");
        }
        assert_eq!(mode(&format!("{base}?sslmode=disable")), SslMode::Disable);
    }
}
