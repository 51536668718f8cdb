//! The statement texts, built once per table (or per set of tables) and kept for the life of
//! the process: `tokio-postgres` prepares a statement per session and the text must be
//! `'static` to key that cache. Table names are fixed identifiers, never client input; keys
//! and values only ever travel as parameters.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use feiyun_meta::Table;
use tokio_postgres::Row;

use crate::PgError;
use crate::conn::{Op, Param};

/// The SQL table behind a [`Table`].
pub(crate) fn sql_table(t: Table) -> &'static str {
    match t {
        Table::Buckets => "feiyun_buckets",
        Table::Objects => "feiyun_objects",
        Table::Versions => "feiyun_versions",
        Table::Heads => "feiyun_heads",
        Table::BucketConfigs => "feiyun_bucket_configs",
        Table::Events => "feiyun_events",
        Table::Uploads => "feiyun_uploads",
        Table::Parts => "feiyun_parts",
        Table::PendingBlobs => "feiyun_pending_blobs",
        Table::Garbage => "feiyun_garbage",
        Table::System => "feiyun_system",
        Table::Iam => "feiyun_iam",
        Table::Kms => "feiyun_kms",
        Table::Functions => "feiyun_functions",
        Table::Replication => "feiyun_replication",
        Table::Cluster => "feiyun_cluster",
        Table::Analytics => "feiyun_analytics",
    }
}

/// One table's statements.
pub(crate) struct Sql {
    pub get: &'static str,
    pub scan_from: &'static str,
    pub scan_range: &'static str,
    pub exists_from: &'static str,
    pub exists_range: &'static str,
    /// Every row of two equal-length arrays of keys and values, written in one statement.
    /// The keys must be distinct (an upsert may not touch a row twice).
    pub upsert_many: &'static str,
    pub delete_many: &'static str,
}

pub(crate) fn sql(t: Table) -> &'static Sql {
    static ALL: OnceLock<Vec<Sql>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        Table::ALL
            .iter()
            .map(|t| {
                let n = sql_table(*t);
                Sql {
                    get: leak(format!("SELECT v FROM {n} WHERE k = $1")),
                    scan_from: leak(format!(
                        "SELECT k, v FROM {n} WHERE k >= $1 ORDER BY k LIMIT $2"
                    )),
                    scan_range: leak(format!(
                        "SELECT k, v FROM {n} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"
                    )),
                    exists_from: leak(format!(
                        "SELECT k FROM {n} WHERE k >= $1 ORDER BY k LIMIT 1"
                    )),
                    exists_range: leak(format!(
                        "SELECT k FROM {n} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT 1"
                    )),
                    upsert_many: leak(format!(
                        "INSERT INTO {n} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                         ON CONFLICT (k) DO UPDATE SET v = excluded.v"
                    )),
                    delete_many: leak(format!("DELETE FROM {n} WHERE k = ANY($1)")),
                }
            })
            .collect()
    });
    &all[index(t)]
}

pub(crate) fn index(t: Table) -> usize {
    Table::ALL.iter().position(|x| *x == t).unwrap_or(0)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Point reads of any tables in one statement: one `SELECT … WHERE k = ANY($n)` per table
/// asked, joined by `UNION ALL`, each row tagged with its table. One statement is one
/// snapshot, so the rows agree with each other even outside a transaction.
pub(crate) struct PointReads {
    /// The tables asked, as indexes into `Table::ALL`, in parameter order.
    tables: Vec<usize>,
    keys: Vec<Vec<Vec<u8>>>,
}

impl PointReads {
    pub(crate) fn new<'a>(reads: impl IntoIterator<Item = (Table, &'a [u8])>) -> Self {
        let mut by_table: Vec<Vec<Vec<u8>>> = vec![Vec::new(); Table::ALL.len()];
        for (t, k) in reads {
            let keys = &mut by_table[index(t)];
            if !keys.iter().any(|x| x == k) {
                keys.push(k.to_vec());
            }
        }
        let mut tables = Vec::new();
        let mut keys = Vec::new();
        for (i, k) in by_table.into_iter().enumerate() {
            if !k.is_empty() {
                tables.push(i);
                keys.push(k);
            }
        }
        Self { tables, keys }
    }

    /// The statement, or `None` when nothing is asked.
    pub(crate) fn op(self) -> Option<Op> {
        if self.tables.is_empty() {
            return None;
        }
        // One key of a table is `k = $n`, which is always a plain index lookup; several are
        // `k = ANY($n)`, which the planner may serve with a bitmap scan (fine for many keys,
        // a waste for one).
        let shape: Vec<(usize, bool)> = self
            .tables
            .iter()
            .zip(&self.keys)
            .map(|(t, k)| (*t, k.len() > 1))
            .collect();
        let text = statement_for(&shape);
        let params = self
            .keys
            .into_iter()
            .map(|mut k| match k.len() {
                1 => Param::Bytes(k.pop().unwrap_or_default()),
                _ => Param::BytesList(k),
            })
            .collect();
        Some(Op::Query(text, params))
    }

    /// The sealed values the statement's rows hold, by table and key.
    pub(crate) fn found(rows: &[Row]) -> Result<Found, PgError> {
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let t: i32 = r.try_get(0).map_err(|e| PgError::Db(e.to_string()))?;
            let k: Vec<u8> = r.try_get(1).map_err(|e| PgError::Db(e.to_string()))?;
            let v: Vec<u8> = r.try_get(2).map_err(|e| PgError::Db(e.to_string()))?;
            let t = usize::try_from(t)
                .ok()
                .filter(|t| *t < Table::ALL.len())
                .ok_or_else(|| PgError::Db(format!("a point read answered table {t}")))?;
            out.insert((Table::ALL[t], k), v);
        }
        Ok(Found(out))
    }
}

/// What a [`PointReads`] statement found.
pub(crate) struct Found(HashMap<(Table, Vec<u8>), Vec<u8>>);

impl Found {
    pub(crate) fn sealed(&self, table: Table, key: &[u8]) -> Option<&[u8]> {
        self.0.get(&(table, key.to_vec())).map(Vec::as_slice)
    }
}

/// The statement for one set of tables, built the first time that set is asked for. The
/// sets the services use are few (a PUT's plan, a GET, a commit's checks), so the cache
/// stays small; it is bounded all the same, past which the text is built for each use.
fn statement_for(shape: &[(usize, bool)]) -> &'static str {
    const MAX_SHAPES: usize = 4096;
    type Shapes = HashMap<Vec<(usize, bool)>, &'static str>;
    static SHAPES: OnceLock<Mutex<Shapes>> = OnceLock::new();
    let shapes = SHAPES.get_or_init(Mutex::default);
    let mut map = shapes.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = map.get(shape) {
        return s;
    }
    let text = shape
        .iter()
        .enumerate()
        .map(|(param, (t, many))| {
            let table = sql_table(Table::ALL[*t]);
            let n = param + 1;
            match many {
                true => format!("SELECT {t}::int4, k, v FROM {table} WHERE k = ANY(${n})"),
                false => format!("SELECT {t}::int4, k, v FROM {table} WHERE k = ${n}"),
            }
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let text = leak(text);
    if map.len() < MAX_SHAPES {
        map.insert(shape.to_vec(), text);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_reads_group_keys_by_table_in_table_order() {
        let reads = PointReads::new([
            (Table::Heads, b"k".as_slice()),
            (Table::Buckets, b"b".as_slice()),
            (Table::Objects, b"k".as_slice()),
            (Table::Heads, b"k".as_slice()),
            (Table::Heads, b"k2".as_slice()),
        ]);
        assert_eq!(reads.tables, vec![0, 1, 3]);
        assert_eq!(
            reads.keys,
            vec![
                vec![b"b".to_vec()],
                vec![b"k".to_vec()],
                vec![b"k".to_vec(), b"k2".to_vec()]
            ]
        );
        let Some(Op::Query(text, params)) = reads.op() else {
            panic!("a query");
        };
        assert_eq!(
            text,
            "SELECT 0::int4, k, v FROM feiyun_buckets WHERE k = $1 UNION ALL \
             SELECT 1::int4, k, v FROM feiyun_objects WHERE k = $2 UNION ALL \
             SELECT 3::int4, k, v FROM feiyun_heads WHERE k = ANY($3)"
        );
        assert_eq!(params.len(), 3);
        // The same shape is the same text (so the same prepared statement).
        let again = PointReads::new([
            (Table::Buckets, b"x".as_slice()),
            (Table::Objects, b"y".as_slice()),
            (Table::Heads, b"z".as_slice()),
            (Table::Heads, b"z2".as_slice()),
        ]);
        let Some(Op::Query(text2, _)) = again.op() else {
            panic!("a query");
        };
        assert!(std::ptr::eq(text, text2));
        assert!(PointReads::new([]).op().is_none());
    }
}
