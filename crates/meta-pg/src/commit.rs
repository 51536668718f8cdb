//! One [`WriteBatch`] as one SERIALIZABLE transaction, retried when the database asks, and
//! settled when the connection breaks during `COMMIT`.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use feiyun_meta::{Check, KvPair, MetaError, MetaRead, Mutation, Table, WriteBatch, envelope};
use rand::Rng;

use crate::conn::{Param, Pool, Pooled};
use crate::{PgError, get_raw, scan_raw, sql, unseal};

/// Tries one batch gets: serialization failures under contention, or a session lost before
/// its `COMMIT` was sent (the database restarting).
const MAX_ATTEMPTS: u32 = 10;
/// Largest batch (keys + values), as for the embedded engine.
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Commit markers older than this are swept; settling one takes seconds.
const MARKER_RETENTION_SECS: i64 = 600;
/// One commit in this many also sweeps (at most 1,000) old markers.
const SWEEP_EVERY: u64 = 256;

static COMMITS: AtomicU64 = AtomicU64::new(0);

/// How one attempt ended, when it did not succeed.
enum Attempt {
    /// Nothing was applied and trying again may work.
    Retry(PgError),
    /// Nothing was applied; this is the caller's answer.
    Failed(MetaError),
}

pub(crate) fn commit(pool: &Arc<Pool>, batch: &WriteBatch) -> Result<bool, MetaError> {
    let size: usize = batch
        .mutations
        .iter()
        .map(|m| match m {
            Mutation::Put { key, value, .. } => key.len() + value.len(),
            Mutation::Delete { key, .. } => key.len(),
        })
        .sum();
    if size > MAX_BATCH_BYTES {
        return Err(MetaError::TooLarge {
            limit: MAX_BATCH_BYTES,
        });
    }
    let mut last = None;
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(backoff(attempt));
        }
        match attempt_once(pool, batch) {
            Ok(replanned) => return Ok(replanned),
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::Retry(e)) => {
                tracing::debug!(attempt, error = %e, "metadata commit retried");
                last = Some(e);
            }
        }
    }
    if let Some(e) = &last
        && e.connection_lost()
    {
        return Err(MetaError::Unavailable(e.to_string()));
    }
    let why = last.map(|e| e.to_string()).unwrap_or_default();
    Err(match last_was_contention(&why) {
        // Writers of one row kept colliding: the caller re-reads and retries, or answers
        // "slow down", as for any conflict.
        true => MetaError::Conflict(format!("serialization retries exhausted: {why}")),
        false => MetaError::Storage(why),
    })
}

fn last_was_contention(why: &str) -> bool {
    why.contains("asked for a retry")
}

/// Exponential from 5 ms to 640 ms, with full jitter so that colliding writers spread out.
fn backoff(attempt: u32) -> Duration {
    let cap = 5u64 << attempt.min(7);
    Duration::from_millis(rand::rng().random_range(cap / 2..=cap))
}

fn attempt_once(pool: &Arc<Pool>, batch: &WriteBatch) -> Result<bool, Attempt> {
    // No session to be had (the database is down, or every session is busy): fail now
    // rather than queue the request behind back-off.
    let mut c = pool.get().map_err(|e| Attempt::Failed(e.into()))?;
    if let Err(e) = c.simple("BEGIN ISOLATION LEVEL SERIALIZABLE") {
        c.discard();
        return Err(retry_if_lost(e));
    }
    let token: [u8; 16] = rand::rng().random();
    let planned = match body(&mut c, batch, &token) {
        Ok(Ok(replanned)) => replanned,
        Ok(Err(refused)) => {
            // A check failed (and no re-plan applies): nothing was written.
            end_quietly(c);
            return Err(Attempt::Failed(refused));
        }
        Err(e) => {
            end_quietly(c);
            return Err(retry_if_lost_or_asked(e));
        }
    };
    match c.simple("COMMIT") {
        Ok(()) => {
            sweep_markers(&mut c);
            Ok(planned)
        }
        Err(PgError::Retry(e)) => Err(Attempt::Retry(PgError::Retry(e))),
        // Any other answer to COMMIT may follow a commit that landed: a backend terminated
        // (57P01) after its commit record was flushed, a lost connection, CockroachDB's
        // ambiguous result (40003). Only the marker tells.
        Err(_) => {
            c.discard();
            settle(pool, &token)
                .map(|()| planned)
                .map_err(Attempt::Failed)
        }
    }
}

/// Rolls back and pools the session, or closes it when even that fails.
fn end_quietly(mut c: Pooled) {
    if c.simple("ROLLBACK").is_err() {
        c.discard();
    }
}

/// Lost before `COMMIT` was sent: the database aborts the transaction, so trying again on a
/// new session is safe.
fn retry_if_lost(e: PgError) -> Attempt {
    if e.connection_lost() {
        Attempt::Retry(e)
    } else {
        Attempt::Failed(e.into())
    }
}

fn retry_if_lost_or_asked(e: PgError) -> Attempt {
    match e {
        PgError::Retry(_) => Attempt::Retry(e),
        e => retry_if_lost(e),
    }
}

/// Checks, re-plan, mutations and the marker, inside the open transaction. The outer error
/// is the database's; the inner one is the batch's own refusal.
fn body(
    c: &mut Pooled,
    batch: &WriteBatch,
    token: &[u8; 16],
) -> Result<Result<bool, MetaError>, PgError> {
    let replanned = match check_all(c, &batch.checks)? {
        Ok(()) => None,
        Err(conflict) => {
            let Some(replan) = &batch.replan else {
                return Ok(Err(conflict));
            };
            let view = TxnView {
                conn: RefCell::new(c),
                failure: RefCell::new(None),
            };
            let planned = (replan.0)(&view);
            if let Some(e) = view.failure.into_inner() {
                return Err(e);
            }
            match planned {
                Err(e) => return Ok(Err(e)),
                Ok(None) => return Ok(Err(conflict)),
                Ok(Some(b)) => {
                    if let Err(refused) = check_all(c, &b.checks)? {
                        return Ok(Err(refused));
                    }
                    Some(b)
                }
            }
        }
    };
    let applied = replanned.as_ref().unwrap_or(batch);
    let mut statements = Vec::with_capacity(applied.mutations.len() + 1);
    for m in &applied.mutations {
        statements.push(match m {
            Mutation::Put { table, key, value } => (
                sql(*table).upsert,
                vec![
                    Param::Bytes(key.clone()),
                    Param::Bytes(envelope::seal(key, value)),
                ],
            ),
            Mutation::Delete { table, key } => {
                (sql(*table).delete, vec![Param::Bytes(key.clone())])
            }
        });
    }
    statements.push((
        "INSERT INTO feiyun_commits (token, applied, at) VALUES ($1, true, $2)",
        vec![Param::Bytes(token.to_vec()), Param::Int(now_secs())],
    ));
    c.execute_pipelined(statements)?;
    Ok(Ok(replanned.is_some()))
}

/// The first check that does not hold, as the conflict the batch fails with.
fn check_all(c: &mut Pooled, checks: &[Check]) -> Result<Result<(), MetaError>, PgError> {
    for check in checks {
        let (table, holds, what) = match check {
            Check::Absent { table, key } => (*table, get_raw(c, *table, key)?.is_none(), "exists"),
            Check::Present { table, key } => {
                (*table, get_raw(c, *table, key)?.is_some(), "missing")
            }
            Check::Equals { table, key, value } => {
                let same = match get_raw(c, *table, key)? {
                    None => false,
                    Some(sealed) => match envelope::open(key, &sealed) {
                        Some(v) => v == value.as_slice(),
                        None => {
                            return Ok(Err(MetaError::Corrupt {
                                table: table.name(),
                            }));
                        }
                    },
                };
                (*table, same, "changed")
            }
            Check::PrefixEmpty { table, prefix } => {
                let rows = match feiyun_meta::prefix_end(prefix) {
                    Some(end) => c.query(
                        sql(*table).exists_range,
                        vec![Param::Bytes(prefix.clone()), Param::Bytes(end)],
                    )?,
                    None => c.query(sql(*table).exists_from, vec![Param::Bytes(prefix.clone())])?,
                };
                (*table, rows.is_empty(), "prefix not empty")
            }
        };
        if !holds {
            return Ok(Err(MetaError::Conflict(format!(
                "{} key {what}",
                table.name()
            ))));
        }
    }
    Ok(Ok(()))
}

/// The rows as the transaction holds them so far: what a [`feiyun_meta::Replan`] reads.
/// A database error is kept aside so that a serialization failure met while re-planning is
/// retried like any other, not reported as the batch's own failure.
struct TxnView<'a> {
    conn: RefCell<&'a mut Pooled>,
    failure: RefCell<Option<PgError>>,
}

impl TxnView<'_> {
    fn keep<T>(&self, r: Result<T, PgError>) -> Result<T, MetaError> {
        r.map_err(|e| {
            let m = MetaError::Storage(e.to_string());
            // The first failure is the cause; reads after it only meet the aborted
            // transaction (25P02).
            self.failure.borrow_mut().get_or_insert(e);
            m
        })
    }
}

impl MetaRead for TxnView<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        let sealed = self.keep(get_raw(&mut self.conn.borrow_mut(), table, key))?;
        sealed.map(|v| unseal(table, key, &v)).transpose()
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KvPair>, MetaError> {
        let rows = self.keep(scan_raw(
            &mut self.conn.borrow_mut(),
            table,
            start,
            end,
            limit,
        ))?;
        rows.into_iter()
            .map(|(k, v)| unseal(table, &k, &v).map(|v| (k, v)))
            .collect()
    }
}

/// After a connection broke during `COMMIT`: inserts the commit's marker as void. The marker's
/// primary key lets exactly one of the two inserts land (the database makes the second wait
/// for the first's transaction to end), so reading it back says whether the commit landed and
/// guarantees it never will if it has not.
fn settle(pool: &Arc<Pool>, token: &[u8; 16]) -> Result<(), MetaError> {
    let mut last = String::new();
    for attempt in 0..6u32 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200 << attempt.min(4)));
        }
        let tried = (|| -> Result<bool, PgError> {
            let mut c = pool.get()?;
            c.execute(
                "INSERT INTO feiyun_commits (token, applied, at) VALUES ($1, false, $2) ON CONFLICT (token) DO NOTHING",
                vec![Param::Bytes(token.to_vec()), Param::Int(now_secs())],
            )?;
            let rows = c.query(
                "SELECT applied FROM feiyun_commits WHERE token = $1",
                vec![Param::Bytes(token.to_vec())],
            )?;
            rows.first()
                .and_then(|r| r.try_get::<_, bool>(0).ok())
                .ok_or_else(|| PgError::Db("a commit marker vanished".into()))
        })();
        match tried {
            Ok(true) => return Ok(()),
            Ok(false) => {
                return Err(MetaError::Storage(
                    "the metadata database connection broke during a commit, which did not land"
                        .into(),
                ));
            }
            Err(e) => last = e.to_string(),
        }
    }
    tracing::error!(error = %last, "a metadata commit's outcome could not be settled");
    Err(MetaError::Indeterminate(last))
}

/// Best effort: old markers are only space.
fn sweep_markers(c: &mut Pooled) {
    if !COMMITS
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(SWEEP_EVERY)
    {
        return;
    }
    let cutoff = now_secs() - MARKER_RETENTION_SECS;
    if let Err(e) = c.execute(
        "DELETE FROM feiyun_commits WHERE token IN \
         (SELECT token FROM feiyun_commits WHERE at < $1 LIMIT 1000)",
        vec![Param::Int(cutoff)],
    ) {
        tracing::debug!(error = %e, "sweeping old commit markers failed");
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
