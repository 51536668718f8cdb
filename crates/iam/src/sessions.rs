//! Live STS sessions, kept apart from the identity snapshot so that issuing one costs a
//! commit and a map insert, not a rebuild of every identity (which grew with the number of
//! sessions: quadratic for a burst of AssumeRole calls).
//!
//! Quotas: at most [`MAX_SESSIONS`] live sessions in the region and
//! [`MAX_SESSIONS_PER_ISSUER`] per principal that asked for them, so one user looping on
//! GetSessionToken cannot crowd out every role session.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::model::SessionRecord;
use crate::store::Caller;

/// Live sessions a region keeps at most.
pub const MAX_SESSIONS: usize = 100_000;
/// Live sessions one issuing principal may hold at most.
pub const MAX_SESSIONS_PER_ISSUER: usize = 1_000;

#[derive(Default)]
pub(crate) struct Sessions {
    records: HashMap<String, SessionRecord>,
    callers: HashMap<String, Arc<Caller>>,
    /// (expiry, access key): the sweep takes the oldest first without a scan.
    by_expiry: BTreeSet<(i64, String)>,
    /// Live and reserved sessions per issuer.
    per_issuer: HashMap<String, usize>,
    /// Sessions whose commit is in flight: they count against the quotas already.
    reserved: usize,
}

/// Who a session is counted against.
pub(crate) fn issuer_of(r: &SessionRecord) -> String {
    match &r.issued_by {
        Some(by) => by.clone(),
        None => format!("{}:{:?}", r.account, r.subject),
    }
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Takes room for one more session of `issuer` (`Err` names the quota that is full);
    /// [`Sessions::insert`] or [`Sessions::unreserve`] settles it.
    pub fn reserve(&mut self, issuer: &str, now: i64) -> Result<(), String> {
        // Expired sessions do not count (their rows go with a later commit).
        let expired = self.by_expiry.range(..(now + 1, String::new())).count();
        if self.records.len() + self.reserved - expired >= MAX_SESSIONS {
            return Err(format!(
                "Cannot exceed quota for live sessions: {MAX_SESSIONS}"
            ));
        }
        let mine = self.of_issuer(issuer);
        if mine >= MAX_SESSIONS_PER_ISSUER {
            let expired_mine = self
                .by_expiry
                .range(..(now + 1, String::new()))
                .filter(|(_, k)| self.records.get(k).is_some_and(|r| issuer_of(r) == issuer))
                .count();
            if mine - expired_mine >= MAX_SESSIONS_PER_ISSUER {
                return Err(format!(
                    "{issuer} holds the most live sessions one principal may: {MAX_SESSIONS_PER_ISSUER}"
                ));
            }
        }
        self.reserved += 1;
        *self.per_issuer.entry(issuer.to_owned()).or_insert(0) += 1;
        Ok(())
    }

    /// Gives back a reservation whose commit failed.
    pub fn unreserve(&mut self, issuer: &str) {
        self.reserved = self.reserved.saturating_sub(1);
        if let Some(n) = self.per_issuer.get_mut(issuer) {
            *n -= 1;
            if *n == 0 {
                self.per_issuer.remove(issuer);
            }
        }
    }

    pub fn of_issuer(&self, issuer: &str) -> usize {
        self.per_issuer.get(issuer).copied().unwrap_or(0)
    }

    pub fn get(&self, access_key: &str) -> Option<&SessionRecord> {
        self.records.get(access_key)
    }

    pub fn caller(&self, access_key: &str) -> Option<Arc<Caller>> {
        self.callers.get(access_key).cloned()
    }

    /// Adds a session that held a reservation (its caller built by `compile`, `None` when
    /// its subject is gone).
    pub fn insert_reserved(&mut self, r: SessionRecord, caller: Option<Caller>) {
        self.unreserve(&issuer_of(&r));
        self.insert(r, caller);
    }

    /// Adds a session (its caller built by `compile`, `None` when its subject is gone).
    pub fn insert(&mut self, r: SessionRecord, caller: Option<Caller>) {
        self.remove(&r.access_key);
        *self.per_issuer.entry(issuer_of(&r)).or_insert(0) += 1;
        self.by_expiry.insert((r.expires, r.access_key.clone()));
        if let Some(c) = caller {
            self.callers.insert(r.access_key.clone(), Arc::new(c));
        }
        self.records.insert(r.access_key.clone(), r);
    }

    pub fn remove(&mut self, access_key: &str) -> Option<SessionRecord> {
        let r = self.records.remove(access_key)?;
        self.callers.remove(access_key);
        self.by_expiry.remove(&(r.expires, r.access_key.clone()));
        let issuer = issuer_of(&r);
        if let Some(n) = self.per_issuer.get_mut(&issuer) {
            *n -= 1;
            if *n == 0 {
                self.per_issuer.remove(&issuer);
            }
        }
        Some(r)
    }

    /// Up to `limit` sessions expired at `now`, oldest first (their rows go next commit).
    pub fn expired(&self, now: i64, limit: usize) -> Vec<String> {
        self.by_expiry
            .iter()
            .take_while(|(e, _)| *e <= now)
            .take(limit)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Rebuilds every caller (the roles and users they stand for changed).
    pub fn recompile(&mut self, compile: impl Fn(&SessionRecord) -> Option<Caller>) {
        self.callers = self
            .records
            .values()
            .filter_map(|r| compile(r).map(|c| (r.access_key.clone(), Arc::new(c))))
            .collect();
    }
}
