//! Commits: the batches waiting on a node go to the database together, a group as one
//! SERIALIZABLE transaction, retried when the database asks and settled when the connection
//! breaks during `COMMIT`.
//!
//! A group costs two round trips however many batches it holds: `BEGIN` with every batch's
//! check reads, then every applied batch's mutations, the group's commit marker and `COMMIT`.
//! Batches are taken in order; a batch whose checks read a row an earlier batch of the group
//! writes has them read again after those writes are sent, and a re-plan reads the rows as
//! the batches before it left them, so a group means exactly what its batches committed one
//! after another would. A few groups are in flight at once (each on its own session), so a
//! lone batch never waits for another group's round trips, and the batches that arrive while
//! they are busy form the next ones.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use feiyun_meta::{Check, KvPair, MetaError, MetaRead, Mutation, Table, WriteBatch, envelope};
use rand::Rng;
use tokio::sync::{Semaphore, oneshot};

use crate::conn::{Answer, Op, Param, Pool, Pooled};
use crate::sql::{Found, index};
use crate::{PgError, PointReads, get_raw, open_point_reads, scan_raw, sql, unseal};

/// Tries one group gets: serialization failures under contention, or a session lost before
/// its `COMMIT` was sent (the database restarting).
const MAX_ATTEMPTS: u32 = 10;
/// Largest batch (keys + values), as for the embedded engine.
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Most batches in one group, and most of their bytes: a group is one transaction, whose
/// locks are held for its round trips.
const MAX_GROUP: usize = 64;
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// Groups in flight at once, each on its own session.
const MAX_GROUPS_IN_FLIGHT: usize = 4;
/// A further group starts beside the ones in flight only when the newest of them has run
/// this long (stuck in retries, a re-plan, a slow database). Otherwise the batches arriving
/// wait for the group in flight and go together in the next: on a database sharing the
/// machine, one group in flight did 1.5x the commits of four at 16 connections, each commit
/// paying its round trips, fsync and invalidation messages once for more batches.
const SLOW_GROUP: Duration = Duration::from_millis(20);
/// Most batches waiting for a group; callers wait (asynchronously) beyond it.
const MAX_QUEUE: usize = 4096;
/// Commit markers older than this are swept; settling one takes seconds.
const MARKER_RETENTION_SECS: i64 = 600;
/// One group in this many also sweeps (at most 1,000) old markers.
const SWEEP_EVERY: u64 = 256;

static COMMITS: AtomicU64 = AtomicU64::new(0);

/// A batch's outcome: applied (`true` when its re-plan was applied instead), or why not.
type Outcome = Result<bool, MetaError>;

struct Waiting {
    batch: WriteBatch,
    bytes: usize,
    reply: oneshot::Sender<Outcome>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Workers running groups.
    workers: usize,
    /// When the newest group in flight was taken.
    newest_group: Option<Instant>,
    /// A timer will look again whether the group in flight has become slow.
    watching: bool,
}

/// What the committer has done since the store opened (Prometheus counters).
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Group transactions that committed.
    pub groups: AtomicU64,
    /// Batches those groups carried (applied or refused by their checks).
    pub batches: AtomicU64,
    /// Attempts the database asked to retry (serialization failures, deadlocks).
    pub retries: AtomicU64,
}

/// The queue of batches and the workers that commit them in groups.
pub(crate) struct Committer {
    pool: Arc<Pool>,
    queue: Mutex<Queue>,
    slots: Arc<Semaphore>,
    pub(crate) stats: Arc<CommitStats>,
}

impl Committer {
    pub(crate) fn new(pool: Arc<Pool>) -> Self {
        Self {
            pool,
            queue: Mutex::new(Queue::default()),
            slots: Arc::new(Semaphore::new(MAX_QUEUE)),
            stats: Arc::default(),
        }
    }

    /// Queues `batch` and waits for its group's outcome. A caller that stops waiting does not
    /// withdraw the batch: it commits (or not) all the same, as with the embedded engine.
    pub(crate) async fn submit(self: &Arc<Self>, batch: WriteBatch) -> Outcome {
        let bytes = batch_bytes(&batch);
        if bytes > MAX_BATCH_BYTES {
            return Err(MetaError::TooLarge {
                limit: MAX_BATCH_BYTES,
            });
        }
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| MetaError::Closed)?;
        let (reply, answer) = oneshot::channel();
        {
            let mut q = lock(&self.queue);
            q.waiting.push_back(Waiting {
                batch,
                bytes,
                reply,
                _slot: slot,
            });
            self.start_or_watch(&mut q);
        }
        answer
            .await
            .map_err(|_| MetaError::Storage("the commit worker stopped".into()))?
    }

    /// With batches waiting: starts a worker when none runs or the newest group in flight
    /// has become slow; otherwise has a timer look again when it would be, so a batch queued
    /// behind a group stuck in retries does not wait for it.
    fn start_or_watch(self: &Arc<Self>, q: &mut Queue) {
        if q.waiting.is_empty() {
            return;
        }
        let slow_at = q.newest_group.map(|t| t + SLOW_GROUP);
        if q.workers == 0
            || (q.workers < MAX_GROUPS_IN_FLIGHT && slow_at.is_none_or(|t| Instant::now() >= t))
        {
            q.workers += 1;
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.work());
        } else if q.workers < MAX_GROUPS_IN_FLIGHT
            && !q.watching
            && let Some(at) = slow_at
        {
            q.watching = true;
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let mut q = lock(&me.queue);
                q.watching = false;
                me.start_or_watch(&mut q);
            });
        }
    }

    /// Commits groups until the queue is empty.
    fn work(&self) {
        // Counts this worker out if it ends by a panic; a worker that finds the queue empty
        // counts itself out under the same lock, so a batch queued after that look always
        // sees no worker and starts one.
        struct Leaving<'a>(&'a Mutex<Queue>, bool);
        impl Drop for Leaving<'_> {
            fn drop(&mut self) {
                if self.1 {
                    lock(self.0).workers -= 1;
                }
            }
        }
        let mut leaving = Leaving(&self.queue, true);
        loop {
            let group = {
                let mut q = lock(&self.queue);
                let group = take_group(&mut q.waiting);
                if group.is_empty() {
                    q.workers -= 1;
                    leaving.1 = false;
                    return;
                }
                q.newest_group = Some(Instant::now());
                group
            };
            let batches: Vec<&WriteBatch> = group.iter().map(|w| &w.batch).collect();
            let outcomes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                commit_group(&self.pool, &batches, &self.stats)
            }))
            .unwrap_or_else(|_| {
                // A re-plan panicked before COMMIT was sent; its session was closed with the
                // transaction open, so nothing of the group landed.
                vec![Err(MetaError::Storage("a commit re-plan panicked".into())); batches.len()]
            });
            drop(batches);
            for (w, outcome) in group.into_iter().zip(outcomes) {
                let _ = w.reply.send(outcome);
            }
        }
    }
}

/// The next group, in arrival order, within the group's bounds (a batch larger than the byte
/// bound goes alone). Takes the queue's lock only as long as it takes to pop.
fn take_group(waiting: &mut VecDeque<Waiting>) -> Vec<Waiting> {
    let mut group = Vec::new();
    let mut bytes = 0;
    while let Some(next) = waiting.front() {
        if group.len() == MAX_GROUP || (!group.is_empty() && bytes + next.bytes > MAX_GROUP_BYTES) {
            break;
        }
        bytes += next.bytes;
        if let Some(w) = waiting.pop_front() {
            group.push(w);
        }
    }
    group
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn batch_bytes(batch: &WriteBatch) -> usize {
    batch
        .mutations
        .iter()
        .map(|m| match m {
            Mutation::Put { key, value, .. } => key.len() + value.len(),
            Mutation::Delete { key, .. } => key.len(),
        })
        .sum()
}

/// How one attempt ended, when it did not succeed.
enum Attempt {
    /// Nothing was applied and trying again may work.
    Retry(PgError),
    /// Nothing was applied; this is every batch's answer.
    Failed(MetaError),
}

/// One outcome per batch, in order.
fn commit_group(pool: &Arc<Pool>, batches: &[&WriteBatch], stats: &CommitStats) -> Vec<Outcome> {
    let mut last = None;
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(backoff(attempt));
        }
        match attempt_once(pool, batches) {
            Ok(outcomes) => {
                stats.groups.fetch_add(1, Ordering::Relaxed);
                stats
                    .batches
                    .fetch_add(batches.len() as u64, Ordering::Relaxed);
                return outcomes;
            }
            // The database refused a statement of the shared transaction: one batch's
            // mutation, perhaps. Each batch alone, so that one cannot fail the others.
            Err(Attempt::Failed(MetaError::Storage(_))) if batches.len() > 1 => {
                return batches
                    .iter()
                    .flat_map(|b| commit_group(pool, std::slice::from_ref(b), stats))
                    .collect();
            }
            Err(Attempt::Failed(e)) => return vec![Err(e); batches.len()],
            Err(Attempt::Retry(e)) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(attempt, error = %e, "metadata commit retried");
                last = Some(e);
            }
        }
    }
    vec![Err(exhausted(last)); batches.len()]
}

fn exhausted(last: Option<PgError>) -> MetaError {
    match last {
        Some(e) if e.connection_lost() => MetaError::Unavailable(e.to_string()),
        // Writers of one row kept colliding: the caller re-reads and retries, or answers
        // "slow down", as for any conflict.
        Some(PgError::Retry(e)) => MetaError::Conflict(format!(
            "serialization retries exhausted: the database asked for a retry ({e})"
        )),
        Some(e) => MetaError::Storage(e.to_string()),
        None => MetaError::Storage("no commit attempt was made".into()),
    }
}

/// Exponential from 5 ms to 640 ms, with full jitter so that colliding writers spread out.
fn backoff(attempt: u32) -> Duration {
    let cap = 5u64 << attempt.min(7);
    Duration::from_millis(rand::rng().random_range(cap / 2..=cap))
}

fn attempt_once(pool: &Arc<Pool>, batches: &[&WriteBatch]) -> Result<Vec<Outcome>, Attempt> {
    // No session to be had (the database is down, or every session is busy): fail now
    // rather than queue the request behind back-off.
    let mut c = pool.get().map_err(|e| Attempt::Failed(e.into()))?;
    // First round trip: BEGIN and every batch's check reads (one statement for all the
    // point checks, one per prefix check).
    let mut ops = vec![Op::Simple("BEGIN ISOLATION LEVEL SERIALIZABLE")];
    ops.extend(check_ops(batches.iter().flat_map(|b| &b.checks)));
    let first = match c.pipeline(ops).and_then(all_ok) {
        Ok(mut a) => {
            a.remove(0);
            CheckAnswers::of(batches.iter().flat_map(|b| &b.checks), a)
        }
        Err(e) => return Err(abandon(c, e)),
    };
    let first = match first {
        Ok(f) => f,
        Err(e) => return Err(abandon(c, e)),
    };
    let mut group = Group {
        conn: c,
        unsent: Vec::new(),
        written: Written::default(),
    };
    let mut outcomes = Vec::with_capacity(batches.len());
    let mut prefixes = first.prefixes.iter();
    for b in batches {
        let prefix_count = b.checks.iter().filter(|c| is_prefix(c)).count();
        let mine: Vec<&Answer> = prefixes.by_ref().take(prefix_count).collect();
        match group.apply(b, &first.points, &mine) {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => return Err(abandon(group.conn, e)),
        }
    }
    let token: [u8; 16] = rand::rng().random();
    group.finish(pool, &token).map(|()| outcomes)
}

/// A group's open transaction on its session.
struct Group {
    conn: Pooled,
    /// Mutations of applied batches not yet sent, in order: the value sealed, or `None` to
    /// delete.
    unsent: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
    written: Written,
}

impl Group {
    /// Decides one batch against the transaction as the batches before it left it: its
    /// checks (read in the first round trip, or again when an earlier batch wrote what they
    /// read), its re-plan when they fail. The outer error ends the attempt.
    fn apply(
        &mut self,
        batch: &WriteBatch,
        points: &Found,
        prefixes: &[&Answer],
    ) -> Result<Outcome, PgError> {
        let verdict = if batch.checks.iter().any(|ch| self.written.touches(ch)) {
            self.flush()?;
            read_checks(&mut self.conn, &batch.checks)?
        } else {
            judge(&batch.checks, points, prefixes)
        };
        let conflict = match verdict {
            Ok(()) => {
                self.queue(batch);
                return Ok(Ok(false));
            }
            Err(conflict) => conflict,
        };
        let Some(replan) = &batch.replan else {
            return Ok(Err(conflict));
        };
        self.flush()?;
        let view = TxnView {
            conn: RefCell::new(&mut self.conn),
            failure: RefCell::new(None),
        };
        let planned = (replan.0)(&view);
        if let Some(e) = view.failure.into_inner() {
            return Err(e);
        }
        let again = match planned {
            Err(e) => return Ok(Err(e)),
            Ok(None) => return Ok(Err(conflict)),
            Ok(Some(b)) => b,
        };
        if let Err(refused) = read_checks(&mut self.conn, &again.checks)? {
            return Ok(Err(refused));
        }
        self.queue(&again);
        Ok(Ok(true))
    }

    fn queue(&mut self, batch: &WriteBatch) {
        for m in &batch.mutations {
            let (table, key, sealed) = match m {
                Mutation::Put { table, key, value } => {
                    (*table, key, Some(envelope::seal(key, value)))
                }
                Mutation::Delete { table, key } => (*table, key, None),
            };
            self.written.add(table, key);
            self.unsent.push((table, key.clone(), sealed));
        }
    }

    /// Sends the mutations queued so far, so that reads after this see them.
    fn flush(&mut self) -> Result<(), PgError> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let ops = mutation_ops(std::mem::take(&mut self.unsent));
        self.conn.pipeline(ops).and_then(all_ok).map(|_| ())
    }

    /// The last round trip: the unsent mutations, the group's commit marker and `COMMIT`.
    fn finish(self, pool: &Arc<Pool>, token: &[u8; 16]) -> Result<(), Attempt> {
        let Group {
            mut conn,
            unsent,
            written,
        } = self;
        if written.is_empty() {
            // Nothing to write (every batch refused, or only checks): nothing to commit.
            end_quietly(conn);
            return Ok(());
        }
        let mut unsent = mutation_ops(unsent);
        unsent.push(Op::Execute(
            "INSERT INTO feiyun_commits (token, applied, at) VALUES ($1, true, $2)",
            vec![Param::Bytes(token.to_vec()), Param::Int(now_secs())],
        ));
        unsent.push(Op::Simple("COMMIT"));
        let answers = match conn.pipeline(unsent) {
            Ok(a) => a,
            // The session broke or timed out with COMMIT sent: only the marker tells.
            Err(_) => {
                conn.discard();
                return settle(pool, token).map_err(Attempt::Failed);
            }
        };
        let mut answers = answers.into_iter();
        let committed = answers.next_back();
        // A statement before COMMIT that the database refused aborted the transaction, and
        // COMMIT then rolled it back (PostgreSQL answers it with ROLLBACK, not an error).
        for a in answers {
            if let Err(e) = a {
                if e.connection_lost() {
                    conn.discard();
                    return settle(pool, token).map_err(Attempt::Failed);
                }
                match committed {
                    // The transaction is over: the session is idle again.
                    Some(Ok(_)) => drop(conn),
                    _ => end_quietly(conn),
                }
                return Err(retry_if_asked(e));
            }
        }
        match committed {
            Some(Ok(_)) => {
                sweep_markers(&mut conn);
                Ok(())
            }
            Some(Err(PgError::Retry(e))) => {
                end_quietly(conn);
                Err(Attempt::Retry(PgError::Retry(e)))
            }
            // Any other answer to COMMIT may follow a commit that landed: a backend
            // terminated (57P01) after its commit record was flushed, a lost connection,
            // CockroachDB's ambiguous result (40003). Only the marker tells.
            Some(Err(_)) | None => {
                conn.discard();
                settle(pool, token).map_err(Attempt::Failed)
            }
        }
    }
}

/// The rows (tables and keys, and so prefixes) a group's applied batches write.
#[derive(Default)]
struct Written(HashMap<Table, BTreeSet<Vec<u8>>>);

impl Written {
    fn add(&mut self, table: Table, key: &[u8]) {
        self.0.entry(table).or_default().insert(key.to_vec());
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `check` reads a row written so far.
    fn touches(&self, check: &Check) -> bool {
        match check {
            Check::Absent { table, key }
            | Check::Present { table, key }
            | Check::Equals { table, key, .. } => {
                self.0.get(table).is_some_and(|keys| keys.contains(key))
            }
            Check::PrefixEmpty { table, prefix } => self.0.get(table).is_some_and(|keys| {
                keys.range(prefix.clone()..)
                    .next()
                    .is_some_and(|k| k.starts_with(prefix))
            }),
        }
    }
}

/// The statements that read `checks`: one for every point check (of any table), then one
/// per prefix check, in order.
fn check_ops<'a>(checks: impl Iterator<Item = &'a Check> + Clone) -> Vec<Op> {
    let points = PointReads::new(checks.clone().filter_map(point_of));
    let mut ops: Vec<Op> = points.op().into_iter().collect();
    for check in checks {
        if let Check::PrefixEmpty { table, prefix } = check {
            ops.push(match feiyun_meta::prefix_end(prefix) {
                Some(end) => Op::Query(
                    sql(*table).exists_range,
                    vec![Param::Bytes(prefix.clone()), Param::Bytes(end)],
                ),
                None => Op::Query(sql(*table).exists_from, vec![Param::Bytes(prefix.clone())]),
            });
        }
    }
    ops
}

/// The row a point check reads.
fn point_of(check: &Check) -> Option<(Table, &[u8])> {
    match check {
        Check::Absent { table, key }
        | Check::Present { table, key }
        | Check::Equals { table, key, .. } => Some((*table, key.as_slice())),
        Check::PrefixEmpty { .. } => None,
    }
}

fn is_prefix(check: &Check) -> bool {
    matches!(check, Check::PrefixEmpty { .. })
}

/// The answers of [`check_ops`]: the point checks' rows, and each prefix check's answer.
struct CheckAnswers {
    points: Found,
    prefixes: Vec<Answer>,
}

impl CheckAnswers {
    fn of<'a>(
        mut checks: impl Iterator<Item = &'a Check>,
        mut answers: Vec<Answer>,
    ) -> Result<Self, PgError> {
        let points = if checks.any(|c| point_of(c).is_some()) {
            if answers.is_empty() {
                return Err(PgError::Db("the check reads went unanswered".into()));
            }
            PointReads::found(answers.remove(0).rows())?
        } else {
            PointReads::found(&[])?
        };
        Ok(Self {
            points,
            prefixes: answers,
        })
    }
}

/// Reads `checks` in one round trip, inside the open transaction.
fn read_checks(c: &mut Pooled, checks: &[Check]) -> Result<Result<(), MetaError>, PgError> {
    if checks.is_empty() {
        return Ok(Ok(()));
    }
    let answers = all_ok(c.pipeline(check_ops(checks.iter()))?)?;
    let read = CheckAnswers::of(checks.iter(), answers)?;
    let prefixes: Vec<&Answer> = read.prefixes.iter().collect();
    Ok(judge(checks, &read.points, &prefixes))
}

/// The first check that does not hold, as the conflict the batch fails with. `prefixes`
/// holds the answers of the prefix checks among `checks`, in order.
fn judge(checks: &[Check], points: &Found, prefixes: &[&Answer]) -> Result<(), MetaError> {
    let mut prefix_answers = prefixes.iter();
    for check in checks {
        let (table, holds, what) = match check {
            Check::Absent { table, key } => {
                (*table, points.sealed(*table, key).is_none(), "exists")
            }
            Check::Present { table, key } => {
                (*table, points.sealed(*table, key).is_some(), "missing")
            }
            Check::Equals { table, key, value } => {
                let same = match points.sealed(*table, key) {
                    None => false,
                    Some(sealed) => match envelope::open(key, sealed) {
                        Some(v) => v == value.as_slice(),
                        None => {
                            return Err(MetaError::Corrupt {
                                table: table.name(),
                            });
                        }
                    },
                };
                (*table, same, "changed")
            }
            Check::PrefixEmpty { table, .. } => {
                let empty = prefix_answers.next().is_none_or(|a| a.rows().is_empty());
                (*table, empty, "prefix not empty")
            }
        };
        if !holds {
            return Err(MetaError::Conflict(format!("{} key {what}", table.name())));
        }
    }
    Ok(())
}

/// The statements that apply `unsent`: each row's last change wins, then per table one
/// upsert of every row written and one delete of every row removed, keys in order (so that
/// groups on different nodes lock shared rows in the same order).
fn mutation_ops(unsent: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>) -> Vec<Op> {
    let mut last: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
    for (table, key, sealed) in unsent {
        last.insert((index(table), key), sealed);
    }
    /// One table's rows: keys and values written, keys removed.
    #[derive(Default)]
    struct TableChanges {
        put_keys: Vec<Vec<u8>>,
        put_values: Vec<Vec<u8>>,
        deleted: Vec<Vec<u8>>,
    }
    let mut by_table: BTreeMap<usize, TableChanges> = BTreeMap::new();
    for ((t, key), sealed) in last {
        let changes = by_table.entry(t).or_default();
        match sealed {
            Some(v) => {
                changes.put_keys.push(key);
                changes.put_values.push(v);
            }
            None => changes.deleted.push(key),
        }
    }
    let mut ops = Vec::new();
    for (t, changes) in by_table {
        let TableChanges {
            put_keys,
            put_values,
            deleted,
        } = changes;
        let statements = sql(Table::ALL[t]);
        if !put_keys.is_empty() {
            ops.push(Op::Execute(
                statements.upsert_many,
                vec![Param::BytesList(put_keys), Param::BytesList(put_values)],
            ));
        }
        if !deleted.is_empty() {
            ops.push(Op::Execute(
                statements.delete_many,
                vec![Param::BytesList(deleted)],
            ));
        }
    }
    ops
}

/// Every answer, or the first error among them.
fn all_ok(answers: Vec<Result<Answer, PgError>>) -> Result<Vec<Answer>, PgError> {
    answers.into_iter().collect()
}

/// Ends an attempt that failed before `COMMIT` was sent: nothing of it was applied.
fn abandon(c: Pooled, e: PgError) -> Attempt {
    if e.connection_lost() {
        c.discard();
    } else {
        end_quietly(c);
    }
    match e {
        PgError::Retry(_) => Attempt::Retry(e),
        // Lost before COMMIT was sent: the database aborts the transaction, so trying again
        // on a new session is safe.
        e if e.connection_lost() => Attempt::Retry(e),
        e => Attempt::Failed(e.into()),
    }
}

/// Rolls back and pools the session, or closes it when even that fails.
fn end_quietly(mut c: Pooled) {
    if c.simple("ROLLBACK").is_err() {
        c.discard();
    }
}

fn retry_if_asked(e: PgError) -> Attempt {
    match e {
        PgError::Retry(_) => Attempt::Retry(e),
        e => Attempt::Failed(e.into()),
    }
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

    fn get_many(&self, reads: &[(Table, &[u8])]) -> Result<Vec<Option<Vec<u8>>>, MetaError> {
        let Some(op) = PointReads::new(reads.iter().copied()).op() else {
            return Ok(Vec::new());
        };
        let mut answers = self.keep(self.conn.borrow_mut().pipeline(vec![op]).and_then(all_ok))?;
        let rows = answers.pop().unwrap_or(Answer::Done);
        open_point_reads(reads, rows.rows())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_touches_what_the_group_wrote() {
        let mut w = Written::default();
        w.add(Table::Objects, b"b/k1");
        w.add(Table::Heads, b"b/k1");
        let rows: &[(Check, bool)] = &[
            (
                Check::Absent {
                    table: Table::Objects,
                    key: b"b/k1".to_vec(),
                },
                true,
            ),
            (
                Check::Present {
                    table: Table::Versions,
                    key: b"b/k1".to_vec(),
                },
                false,
            ),
            (
                Check::Equals {
                    table: Table::Heads,
                    key: b"b/k1".to_vec(),
                    value: vec![],
                },
                true,
            ),
            (
                Check::Absent {
                    table: Table::Objects,
                    key: b"b/k10".to_vec(),
                },
                false,
            ),
            (
                Check::PrefixEmpty {
                    table: Table::Objects,
                    prefix: b"b/".to_vec(),
                },
                true,
            ),
            (
                Check::PrefixEmpty {
                    table: Table::Objects,
                    prefix: b"b/k2".to_vec(),
                },
                false,
            ),
            (
                Check::PrefixEmpty {
                    table: Table::Objects,
                    prefix: b"".to_vec(),
                },
                true,
            ),
            (
                Check::PrefixEmpty {
                    table: Table::Buckets,
                    prefix: b"".to_vec(),
                },
                false,
            ),
        ];
        for (check, want) in rows {
            assert_eq!(w.touches(check), *want, "{check:?}");
        }
    }
}
