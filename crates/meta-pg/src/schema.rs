//! The schema, created and migrated by the binary. `feiyun_schema` holds one row per applied
//! version; each step runs in its own SERIALIZABLE transaction together with the row that
//! records it, so nodes starting at once apply each step exactly once (the loser of the race
//! fails on the row's primary key or a serialization check, and retries to find it done).

use std::time::Duration;

use feiyun_meta::Table;

use crate::conn::{Param, Pool};
use crate::{PgError, sql_table};

/// The newest schema version this binary knows.
pub(crate) const VERSION: i64 = 3;

/// The tables version 1 created: the first ones of `Table::ALL`, which only grows at its end.
const V1_TABLES: usize = 15;

/// Version 1: one table per metadata table, and the commit markers.
fn step_1() -> Vec<String> {
    let mut out = Vec::new();
    for t in &Table::ALL[..V1_TABLES] {
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (k BYTEA PRIMARY KEY, v BYTEA NOT NULL)",
            sql_table(*t)
        ));
    }
    // One row per commit, written inside the commit's own transaction: after a connection
    // breaks during COMMIT, inserting the same token as void settles whether it landed.
    // `at` (seconds since the epoch) lets old rows be swept.
    out.push(
        "CREATE TABLE IF NOT EXISTS feiyun_commits \
         (token BYTEA PRIMARY KEY, applied BOOL NOT NULL, at BIGINT NOT NULL)"
            .into(),
    );
    out
}

/// Version 2: the cluster membership table.
fn step_2() -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {} (k BYTEA PRIMARY KEY, v BYTEA NOT NULL)",
        sql_table(Table::Cluster)
    )]
}

/// Version 3: the SQL analytics table (catalogs, query history, jobs).
fn step_3() -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {} (k BYTEA PRIMARY KEY, v BYTEA NOT NULL)",
        sql_table(Table::Analytics)
    )]
}

pub(crate) fn migrate(pool: &std::sync::Arc<Pool>) -> Result<(), PgError> {
    let mut c = pool.get()?;
    c.simple("CREATE TABLE IF NOT EXISTS feiyun_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .or_else(|e| match e {
            // Two nodes creating it at once: the other one won.
            PgError::Db(_) | PgError::Retry(_) => Ok(()),
            e => Err(e),
        })?;
    for attempt in 0.. {
        let rows = c.query(
            "SELECT COALESCE(MAX(version), 0) FROM feiyun_schema",
            vec![],
        )?;
        let found: i64 = rows.first().and_then(|r| r.try_get(0).ok()).unwrap_or(0);
        if found > VERSION {
            return Err(PgError::SchemaTooNew {
                found,
                known: VERSION,
            });
        }
        if found == VERSION {
            tune(&mut c);
            return Ok(());
        }
        let next = found + 1;
        let steps = match next {
            1 => step_1(),
            2 => step_2(),
            3 => step_3(),
            _ => unreachable_step(next)?,
        };
        match apply(&mut c, next, &steps) {
            Ok(()) => tracing::info!(version = next, "metadata schema migrated"),
            Err(PgError::Retry(_) | PgError::Db(_)) if attempt < 20 => {
                // Another node is applying the same step; look again.
                std::thread::sleep(Duration::from_millis(50 + 20 * attempt));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Storage settings that only make things faster, applied at every start (they are cheap
/// and idempotent). An engine that refuses one is used as it is.
///
/// PostgreSQL moves any row over ~2 KiB out of line (TOAST), compressing it first: a 4 KiB
/// object's row became a compression attempt on bytes that do not compress, three rows in a
/// side table and their index entries. The upsert of `feiyun_objects` cost 290 µs a call
/// against 40–60 µs for the other tables' (pg_stat_statements, a 4 KiB PUT load); with rows
/// up to a page kept whole, 190 µs.
///
/// Only tables without the setting are altered (an `ALTER TABLE` invalidates every
/// session's plans), each waiting at most a second for its lock.
fn tune(c: &mut crate::conn::Pooled) {
    let ours: Vec<&str> = Table::ALL.iter().map(|t| sql_table(*t)).collect();
    let missing = c.query(
        "SELECT relname::text FROM pg_class WHERE relkind = 'r' AND relname LIKE 'feiyun\\_%' \
         AND NOT COALESCE(reloptions @> ARRAY['toast_tuple_target=8160'], false)",
        vec![],
    );
    let missing = match missing {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(error = %e, "the database has no pg_class reloptions");
            return;
        }
    };
    for row in missing {
        let Some(name) = row
            .try_get::<_, String>(0)
            .ok()
            .filter(|n| ours.contains(&n.as_str()))
        else {
            continue;
        };
        // One implicit transaction: the lock timeout holds for this statement only.
        let s = format!(
            "SET LOCAL lock_timeout = '1s'; ALTER TABLE {name} SET (toast_tuple_target = 8160)"
        );
        if let Err(e) = c.simple(&s) {
            tracing::debug!(table = %name, error = %e, "toast_tuple_target not set");
        }
    }
}

fn unreachable_step(v: i64) -> Result<Vec<String>, PgError> {
    Err(PgError::Db(format!("no migration to schema version {v}")))
}

fn apply(c: &mut crate::conn::Pooled, version: i64, steps: &[String]) -> Result<(), PgError> {
    c.simple("BEGIN ISOLATION LEVEL SERIALIZABLE")?;
    let result = (|| {
        for s in steps {
            c.simple(s)?;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        c.execute(
            "INSERT INTO feiyun_schema (version, applied_at) VALUES ($1, $2)",
            vec![Param::Int(version), Param::Int(now)],
        )?;
        c.simple("COMMIT")
    })();
    if result.is_err() {
        let _ = c.simple("ROLLBACK");
    }
    result
}
