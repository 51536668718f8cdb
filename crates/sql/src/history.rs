//! Query history per account: one row per statement in the `analytics` table under
//! `history/ACCOUNT/START-ID` (oldest first), written when the statement ends — also when
//! it was cancelled. The newest [`KEEP`] rows of an account are kept.

use serde::{Deserialize, Serialize};

use crate::SqlError;
use crate::engine::{Statement, Stats};
use crate::region::Region;

/// Rows kept per account.
pub const KEEP: usize = 5000;
/// Characters of a statement's text kept.
pub const TEXT_LIMIT: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryRow {
    pub id: String,
    pub text: String,
    pub caller: String,
    pub source: String,
    pub start_ms: i64,
    pub duration_ms: u64,
    pub rows: u64,
    pub objects_read: u64,
    pub bytes_scanned: u64,
    /// `SUCCEEDED`, `FAILED` or `CANCELLED`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(skip)]
    account: String,
}

pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `text` cut to `limit` characters, on a character boundary.
pub fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

impl HistoryRow {
    pub(crate) fn started(st: &Statement<'_>, start_ms: i64) -> Self {
        Self {
            id: uuid::Uuid::now_v7().simple().to_string(),
            text: truncate(st.text, TEXT_LIMIT),
            caller: st.caller.principal.arn.clone(),
            source: st.source.to_owned(),
            start_ms,
            duration_ms: 0,
            rows: 0,
            objects_read: 0,
            bytes_scanned: 0,
            status: "RUNNING".into(),
            error: String::new(),
            account: st.caller.principal.account.clone(),
        }
    }

    pub(crate) fn end(&mut self, result: Result<u64, &SqlError>, stats: &Stats) {
        self.duration_ms = stats.elapsed.as_millis() as u64;
        self.objects_read = stats.objects_read;
        self.bytes_scanned = stats.bytes_read;
        match result {
            Ok(rows) => {
                self.rows = rows;
                self.status = "SUCCEEDED".into();
            }
            Err(SqlError::Cancelled) => {
                self.status = "CANCELLED".into();
                self.error = SqlError::Cancelled.to_string();
            }
            Err(e) => {
                self.status = "FAILED".into();
                self.error = truncate(&e.to_string(), 1024);
            }
        }
    }
}

fn prefix(account: &str) -> Vec<u8> {
    format!("history/{account}/").into_bytes()
}

pub(crate) async fn record(region: &dyn Region, row: HistoryRow) {
    let key = format!("history/{}/{:016x}-{}", row.account, row.start_ms, row.id).into_bytes();
    let Ok(value) = serde_json::to_vec(&row) else {
        return;
    };
    if let Err(e) = region.apply(vec![], vec![(key, Some(value))]).await {
        tracing::warn!(error = %e, "a query history row could not be written");
        return;
    }
    // Trimming now and then keeps an account's rows near KEEP without a count per write.
    if rand_u8() < 4 {
        trim(region, &row.account).await;
    }
}

fn rand_u8() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

async fn trim(region: &dyn Region, account: &str) {
    let Ok(rows) = region.rows(&prefix(account), None, KEEP * 2).await else {
        return;
    };
    if rows.len() <= KEEP {
        return;
    }
    let excess = rows.len() - KEEP;
    let deletes = rows
        .into_iter()
        .take(excess)
        .map(|(k, _)| (k, None))
        .collect();
    let _ = region.apply(vec![], deletes).await;
}

/// The newest `limit` rows of an account (of one caller's statements when `only` names
/// it), newest first.
pub async fn list(
    region: &dyn Region,
    account: &str,
    only: Option<&str>,
    limit: usize,
) -> Result<Vec<HistoryRow>, SqlError> {
    let rows = region
        .rows(&prefix(account), None, KEEP * 2)
        .await
        .map_err(|e| SqlError::Internal(e.to_string()))?;
    Ok(rows
        .iter()
        .rev()
        .filter_map(|(_, v)| serde_json::from_slice::<HistoryRow>(v).ok())
        .filter(|r| only.is_none_or(|who| r.caller == who))
        .take(limit)
        .collect())
}
