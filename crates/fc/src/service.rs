//! The function service: deploys functions (code into the system bucket, the compiled
//! artifact into an on-disk cache, the record into the metadata store), publishes versions
//! and aliases, and runs invocations through admission control and the autoscaler, metering
//! each one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use feiyun_meta::{MetaError, MetaStore, Table, WriteBatch};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};

use crate::host::{Host, HostError, Identities, RoleCredentials};
use crate::meter::{Meter, Outcome};
use crate::records::{
    self, Code, FunctionConfig, FunctionRecord, InvocationRecord, Source, Totals, Trigger, Version,
};
use crate::runtime::{self, Compiled, FcError, Limits, Request, Response, Runtime};
use crate::scale::{Policy, Reason, Scaler};

mod artifacts;
mod invoke;
mod routes;

use artifacts::{read_artifact, write_artifact};
use routes::Routes;

/// What `$LATEST` is called in qualifiers and records.
pub const LATEST: &str = "$LATEST";
/// Largest request body an invocation takes (Lambda's synchronous payload limit).
pub const MAX_REQUEST: usize = 6 << 20;
/// Largest response body a function may write.
pub const MAX_RESPONSE: usize = 6 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid function code: {0}")]
    InvalidCode(FcError),
    #[error("the function is at its concurrency limit")]
    Throttled { retry_after: Duration },
    #[error("the region is at its limit of running instances")]
    Unavailable { retry_after: Duration },
    /// The function ran and failed (timeout, memory, trap, exit status).
    #[error("{0}")]
    Function(FcError),
    #[error("metadata: {0}")]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{0}")]
    Internal(String),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub region: String,
    /// Where compiled artifacts are cached.
    pub cache_dir: PathBuf,
    /// The autoscaler's stable window (the panic window is a tenth of it).
    pub stable_window: Duration,
    /// No request for this long (and nothing provisioned) scales a function to zero.
    pub idle: Duration,
    /// How long a request waits for room before 429/503.
    pub queue_wait: Duration,
    /// Invocation records older than this are trimmed.
    pub log_retention: Duration,
    /// Largest log kept per invocation.
    pub max_log: usize,
    /// Networks (beyond the public internet) functions may connect to.
    pub allowed_networks: Vec<crate::outbound::Network>,
    /// The key of the marks on functions' calls to their region (random per process).
    pub call_key: [u8; 32],
    /// MiB that all running instances together may use (each counts its memory limit).
    pub memory_budget_mib: u64,
    /// The part of the budget one function may hold, in percent.
    pub function_share_percent: u64,
    /// The key compiled artifacts are MACed with (derived from the master key, so an
    /// artifact written by anyone else is never loaded as native code).
    pub artifact_key: [u8; 32],
}

impl Settings {
    pub fn new(region: &str, data_dir: &Path) -> Self {
        Self {
            region: region.to_owned(),
            cache_dir: data_dir.join("fc-cache"),
            stable_window: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            queue_wait: Duration::from_secs(1),
            log_retention: Duration::from_secs(7 * 86_400),
            max_log: 64 << 10,
            allowed_networks: Vec::new(),
            call_key: [0; 32],
            artifact_key: [0; 32],
            memory_budget_mib: 4096,
            function_share_percent: 50,
        }
    }
}

/// How a deploy sets the configuration: given fields replace, the rest keep their value
/// (or the default for a new function).
#[derive(Debug, Clone, Default)]
pub struct ConfigUpdate {
    pub memory: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub fuel: Option<Option<u64>>,
    pub env: Option<std::collections::BTreeMap<String, String>>,
    pub max_concurrency: Option<u32>,
    pub min_instances: Option<u32>,
    pub max_instances: Option<u32>,
    pub public: Option<bool>,
    pub description: Option<String>,
    pub allow_hosts: Option<Vec<String>>,
    /// `Some(None)` removes the role; a role is given as its ARN (see
    /// [`Functions::resolve_role`]).
    pub role: Option<Option<String>>,
}

/// Environment variables the region sets for every function, which its own may not name.
const RESERVED_ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "FC_FUNCTION_NAME",
    "FC_FUNCTION_VERSION",
];

impl ConfigUpdate {
    fn apply(self, mut c: FunctionConfig) -> Result<FunctionConfig, ServiceError> {
        let bad = |m: String| Err(ServiceError::InvalidParameter(m));
        if let Some(m) = self.memory {
            if !(1 << 20..=runtime::MAX_MEMORY as u64).contains(&m) {
                return bad(format!(
                    "memory must be between 1 MiB and {} MiB",
                    runtime::MAX_MEMORY >> 20
                ));
            }
            c.memory = m;
        }
        if let Some(t) = self.timeout_ms {
            if !(1..=900_000).contains(&t) {
                return bad("timeout must be between 1 ms and 15 minutes".into());
            }
            c.timeout_ms = t;
        }
        if let Some(f) = self.fuel {
            c.fuel = f;
        }
        if let Some(env) = self.env {
            for k in env.keys() {
                let ok = !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !k.as_bytes()[0].is_ascii_digit();
                if !ok {
                    return bad(format!("{k:?} is not an environment variable name"));
                }
                if RESERVED_ENV.contains(&k.as_str()) {
                    return bad(format!("{k} is reserved: the region sets it"));
                }
            }
            let size: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
            if size > 4096 {
                return bad("environment variables exceed 4 KiB (Lambda's limit)".into());
            }
            c.env = env;
        }
        if let Some(n) = self.max_concurrency {
            c.max_concurrency = n;
        }
        if let Some(n) = self.min_instances {
            c.min_instances = n;
        }
        if let Some(n) = self.max_instances {
            c.max_instances = n;
        }
        if let Some(p) = self.public {
            c.public = p;
        }
        if let Some(hosts) = self.allow_hosts {
            for h in &hosts {
                let ok = !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
                if !ok {
                    return bad(format!("{h:?} is not a host name (or host:port)"));
                }
            }
            c.allow_hosts = hosts;
        }
        if let Some(r) = self.role {
            c.role = r;
        }
        if let Some(d) = self.description {
            if d.len() > 256 {
                return bad("description is longer than 256 characters".into());
            }
            c.description = d;
        }
        if !(1..=1000).contains(&c.max_concurrency) {
            return bad("max-concurrency must be between 1 and 1000".into());
        }
        if !(1..=1000).contains(&c.max_instances) {
            return bad("max-instances must be between 1 and 1000".into());
        }
        if c.min_instances > c.max_instances {
            return bad("min-instances must not exceed max-instances".into());
        }
        Ok(c)
    }
}

/// A function as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionInfo {
    pub name: String,
    pub arn: String,
    pub owner: String,
    pub created: String,
    pub modified: String,
    pub code_sha256: String,
    pub code_size: u64,
    pub config: FunctionConfig,
    pub versions: Vec<VersionInfo>,
    pub aliases: std::collections::BTreeMap<String, u32>,
    pub triggers: Vec<crate::records::TriggerSpec>,
    pub instances: u32,
    pub in_flight: u32,
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    pub version: u32,
    pub code_sha256: String,
    pub published: String,
    pub description: String,
}

/// The result of one invocation.
pub struct Invoked {
    pub response: Response,
    pub id: String,
    pub version: String,
    pub duration: Duration,
    pub cold: bool,
}

/// One function version's warm state: the autoscaler and the compiled code.
struct Pool {
    name: String,
    label: String,
    version: Version,
    scaler: Mutex<Scaler>,
    room: Notify,
    compiled: tokio::sync::Mutex<Option<Compiled>>,
    /// What every invocation of this version may use (built once, not per request).
    limits: Limits,
}

pub struct Functions<M: MetaStore> {
    meta: Arc<M>,
    host: Arc<dyn Host>,
    runtime: Arc<Runtime>,
    settings: Settings,
    records: Mutex<HashMap<String, Arc<FunctionRecord>>>,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// Region-wide instance slots (the pooling allocator's), beyond which requests get 503.
    slots: Arc<Semaphore>,
    /// The region-wide memory budget in MiB: a running invocation holds its limit's worth.
    memory: Arc<Semaphore>,
    /// MiB each function holds now, against its share of the budget.
    shares: Mutex<HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
    meter: Arc<Meter>,
    /// Bumped by every change of a function, so trigger workers know to reload.
    pub(crate) generation: std::sync::atomic::AtomicU64,
    identities: std::sync::OnceLock<Arc<dyn Identities>>,
    /// The URL functions reach this region's S3 API at (`AWS_ENDPOINT_URL`); a function with
    /// a role may always call it. Known once the listener is bound.
    endpoint: std::sync::OnceLock<String>,
    /// Where outbound requests may go; set with the endpoint.
    outbound: std::sync::OnceLock<Arc<crate::outbound::OutboundPolicy>>,
    /// Live sessions of execution roles, per function and role.
    sessions: Mutex<HashMap<(String, String), RoleCredentials>>,
    /// HTTP routes of every function, rebuilt when `generation` moves.
    routes: std::sync::RwLock<Arc<Routes>>,
    /// Host names that are the region's own (its S3 domains): no route may take them or
    /// their subdomains (virtual-hosted buckets).
    own_hosts: std::sync::OnceLock<Vec<String>>,
    /// The domains set aside for functions: a route's host must be one or under one.
    route_domains: std::sync::OnceLock<Vec<String>>,
}

/// How long an execution role's session lasts, and how much of it must remain for an
/// invocation to be handed it (a function may run up to 15 minutes).
const ROLE_SESSION_SECS: i64 = 3600;
const ROLE_SESSION_MARGIN_SECS: i64 = 1200;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl<M: MetaStore> Functions<M> {
    /// Opens the service; spawns the autoscaler and the meter's writer on the current
    /// runtime.
    pub fn open(
        meta: Arc<M>,
        host: Arc<dyn Host>,
        settings: Settings,
    ) -> Result<Arc<Self>, ServiceError> {
        let runtime = Arc::new(Runtime::new().map_err(|e| ServiceError::Internal(e.to_string()))?);
        std::fs::create_dir_all(&settings.cache_dir).map_err(|e| {
            ServiceError::Internal(format!(
                "cannot create {}: {e}",
                settings.cache_dir.display()
            ))
        })?;
        let meter = Meter::start(meta.clone(), settings.log_retention)?;
        let svc = Arc::new(Self {
            meta,
            host,
            runtime,
            slots: Arc::new(Semaphore::new(runtime::POOL_INSTANCES as usize)),
            memory: Arc::new(Semaphore::new(
                settings
                    .memory_budget_mib
                    .min(Semaphore::MAX_PERMITS as u64) as usize,
            )),
            shares: Mutex::default(),
            settings,
            records: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            meter,
            generation: std::sync::atomic::AtomicU64::new(1),
            identities: std::sync::OnceLock::new(),
            endpoint: std::sync::OnceLock::new(),
            outbound: std::sync::OnceLock::new(),
            sessions: Mutex::new(HashMap::new()),
            routes: std::sync::RwLock::new(Arc::new(Routes::default())),
            own_hosts: std::sync::OnceLock::new(),
            route_domains: std::sync::OnceLock::new(),
        });
        svc.clone().spawn_autoscaler();
        crate::triggers::spawn(&svc);
        Ok(svc)
    }

    /// Connects the region's IAM, which execution roles need (set once, at start).
    pub fn set_identities(&self, ids: Arc<dyn Identities>) {
        let _ = self.identities.set(ids);
    }

    pub(crate) fn identities(&self) -> Option<&Arc<dyn Identities>> {
        self.identities.get()
    }

    /// Where functions with a role reach the region's S3 API (set once, at start).
    pub fn set_endpoint(&self, url: String) {
        let mut policy = crate::outbound::OutboundPolicy::new(
            self.settings.allowed_networks.clone(),
            self.settings.call_key,
        );
        if let Ok(uri) = url.parse::<http::Uri>()
            && let Some(a) = uri.authority()
            && let Ok(addr) = a.as_str().parse::<std::net::SocketAddr>()
        {
            policy = policy.with_region(a.to_string(), addr);
        }
        let _ = self.outbound.set(Arc::new(policy));
        let _ = self.endpoint.set(url);
    }

    /// The outbound policy (a default one before the endpoint is known).
    fn outbound_policy(&self) -> Arc<crate::outbound::OutboundPolicy> {
        self.outbound
            .get_or_init(|| {
                Arc::new(crate::outbound::OutboundPolicy::new(
                    self.settings.allowed_networks.clone(),
                    self.settings.call_key,
                ))
            })
            .clone()
    }

    /// The ARN of the role `role` names in `account`, if functions may run as it.
    pub fn resolve_role(&self, account: &str, role: &str) -> Result<String, ServiceError> {
        let ids = self.identities.get().ok_or_else(|| {
            ServiceError::InvalidParameter("this region has no identities for functions".into())
        })?;
        ids.resolve_role(account, role)
            .map_err(ServiceError::InvalidParameter)
    }

    /// Credentials of the function's role, from a live session when one has enough time
    /// left.
    async fn role_credentials(&self, name: &str, role: &str) -> Result<RoleCredentials, String> {
        let key = (name.to_owned(), role.to_owned());
        let now = now_ms() / 1000;
        if let Some(c) = lock(&self.sessions).get(&key)
            && c.expires - now > ROLE_SESSION_MARGIN_SECS
        {
            return Ok(c.clone());
        }
        let ids = self
            .identities
            .get()
            .ok_or("this region has no identities for functions")?;
        let c = ids
            .assume(role, name, ROLE_SESSION_SECS)
            .await
            .map_err(|e| format!("cannot assume the function's role {role}: {e}"))?;
        lock(&self.sessions).insert(key, c.clone());
        Ok(c)
    }

    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    pub fn arn(&self, f: &FunctionRecord) -> String {
        format!(
            "arn:aws:fc:{}:{}:function:{}",
            self.settings.region, f.owner, f.name
        )
    }

    /// The ARN a policy names for `name` in `account`, whether or not it exists.
    pub fn arn_of(&self, account: &str, name: &str) -> String {
        format!(
            "arn:aws:fc:{}:{account}:function:{name}",
            self.settings.region
        )
    }

    /// The function's record, from memory when this process has read or written it.
    pub fn function(&self, name: &str) -> Result<Arc<FunctionRecord>, ServiceError> {
        if let Some(r) = lock(&self.records).get(name) {
            return Ok(r.clone());
        }
        let raw = self
            .meta
            .get(Table::Functions, &records::function_key(name))?
            .ok_or_else(|| ServiceError::NotFound(format!("Function not found: {name}")))?;
        let r = Arc::new(
            records::decode::<FunctionRecord>(&raw)
                .ok_or_else(|| ServiceError::Internal(format!("corrupt record of {name}")))?,
        );
        lock(&self.records).insert(name.to_owned(), r.clone());
        Ok(r)
    }

    pub fn list(&self) -> Result<Vec<Arc<FunctionRecord>>, ServiceError> {
        let mut out = Vec::new();
        let mut start = b"f/".to_vec();
        loop {
            let page = self
                .meta
                .scan(Table::Functions, &start, Some(b"f0"), 1000)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (_, v) in &page {
                if let Some(r) = records::decode::<FunctionRecord>(v) {
                    out.push(Arc::new(r));
                }
            }
        }
        Ok(out)
    }

    pub fn info(&self, f: &FunctionRecord) -> FunctionInfo {
        let (instances, in_flight) = lock(&self.pools)
            .values()
            .filter(|p| p.name == f.name)
            .map(|p| {
                let s = lock(&p.scaler);
                (s.instances, s.in_flight)
            })
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        FunctionInfo {
            name: f.name.clone(),
            arn: self.arn(f),
            owner: f.owner.clone(),
            created: rfc3339(f.created_ms),
            modified: rfc3339(f.latest.modified_ms),
            code_sha256: f.latest.code.sha256.clone(),
            code_size: f.latest.code.size,
            config: f.latest.config.clone(),
            versions: f
                .versions
                .iter()
                .map(|(n, v)| VersionInfo {
                    version: *n,
                    code_sha256: v.code.sha256.clone(),
                    published: rfc3339(v.modified_ms),
                    description: v.config.description.clone(),
                })
                .collect(),
            aliases: f.aliases.clone(),
            triggers: f.triggers.clone(),
            instances,
            in_flight,
            totals: self.meter.totals(&f.name),
        }
    }

    /// Creates a function or replaces its `$LATEST` code and configuration. The code is
    /// compiled before anything is stored: invalid code changes nothing.
    pub async fn deploy(
        &self,
        owner: &str,
        name: &str,
        wasm: Bytes,
        update: ConfigUpdate,
    ) -> Result<Arc<FunctionRecord>, ServiceError> {
        if !records::valid_name(name) {
            return Err(ServiceError::InvalidParameter(format!(
                "{name:?} is not a function name (1-64 letters, digits, '-' or '_')"
            )));
        }
        let existing = match self.function(name) {
            Ok(f) => Some(f),
            Err(ServiceError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(f) = &existing
            && f.owner != owner
        {
            return Err(ServiceError::Conflict(format!(
                "a function named {name} already exists in another account"
            )));
        }
        let base = existing
            .as_ref()
            .map(|f| f.latest.config.clone())
            .unwrap_or_default();
        let mut update = update;
        if let Some(Some(role)) = &update.role {
            update.role = Some(Some(self.resolve_role(owner, role)?));
        }
        let config = update.apply(base)?;
        let sha256 = hex::encode(Sha256::digest(&wasm));
        let code = Code {
            sha256,
            size: wasm.len() as u64,
        };
        // Code this region compiled before (a configuration change, the same code under
        // another name) loads from the cache: same SHA-256, same artifact.
        let fuel = config.fuel.is_some();
        let compiled = match self.load_cached(&code, fuel).await {
            Some(c) => c,
            None => {
                let rt = self.runtime.clone();
                let w = wasm.clone();
                let (compiled, serialized) =
                    tokio::task::spawn_blocking(move || rt.precompile(&w, fuel))
                        .await
                        .map_err(|e| ServiceError::Internal(e.to_string()))?
                        .map_err(|e| match e {
                            FcError::Internal(m) => ServiceError::Internal(m),
                            e => ServiceError::InvalidCode(e),
                        })?;
                self.cache_store(&code, fuel, serialized).await;
                compiled
            }
        };
        self.host.put_code(&code.key(name), wasm).await?;
        let now = now_ms();
        let record = FunctionRecord {
            name: name.to_owned(),
            owner: owner.to_owned(),
            created_ms: existing.as_ref().map_or(now, |f| f.created_ms),
            latest: Version {
                code: code.clone(),
                config,
                modified_ms: now,
            },
            versions: existing
                .as_ref()
                .map(|f| f.versions.clone())
                .unwrap_or_default(),
            aliases: existing
                .as_ref()
                .map(|f| f.aliases.clone())
                .unwrap_or_default(),
            next_version: existing.as_ref().map_or(1, |f| f.next_version),
            triggers: existing
                .as_ref()
                .map(|f| f.triggers.clone())
                .unwrap_or_default(),
        };
        let record = self.save(existing.as_deref(), record).await?;
        if let Some(old) = existing {
            self.drop_unused_code(&old, &record).await;
        }
        // The new `$LATEST` starts warm: it was just compiled.
        self.retire(name, Some(LATEST));
        let pool = self.pool(&record, LATEST, &record.latest);
        *pool.compiled.lock().await = Some(compiled);
        Ok(record)
    }

    /// Commits `record`, provided the stored one is still `expected` (or absent).
    async fn save(
        &self,
        expected: Option<&FunctionRecord>,
        record: FunctionRecord,
    ) -> Result<Arc<FunctionRecord>, ServiceError> {
        let key = records::function_key(&record.name);
        let mut batch = WriteBatch::new();
        match expected {
            Some(old) => {
                batch.check_value(Table::Functions, key.clone(), Some(records::encode(old)))
            }
            None => batch.check_absent(Table::Functions, key.clone()),
        };
        batch.put(Table::Functions, key, records::encode(&record));
        match self.meta.commit(batch).await {
            Ok(()) => {}
            Err(MetaError::Conflict(_)) => {
                lock(&self.records).remove(&record.name);
                return Err(ServiceError::Conflict(format!(
                    "{} was changed by another request; retry",
                    record.name
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let record = Arc::new(record);
        lock(&self.records).insert(record.name.clone(), record.clone());
        self.changed();
        Ok(record)
    }

    /// Forgets the functions read into memory and rebuilds routes and triggers: another
    /// node of the region changed a function.
    pub fn forget_cached(&self) {
        lock(&self.records).clear();
        self.changed();
    }

    fn changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn region(&self) -> &str {
        &self.settings.region
    }

    pub(crate) fn host(&self) -> &Arc<dyn Host> {
        &self.host
    }

    pub(crate) fn meta(&self) -> &Arc<M> {
        &self.meta
    }

    /// Stores a changed record (triggers, say) over the one read.
    pub(crate) async fn replace(
        &self,
        old: &FunctionRecord,
        new: FunctionRecord,
    ) -> Result<Arc<FunctionRecord>, ServiceError> {
        self.save(Some(old), new).await
    }

    async fn drop_unused_code(&self, old: &FunctionRecord, new: &FunctionRecord) {
        let keep = new.code_keys();
        for key in old.code_keys().difference(&keep) {
            if let Err(e) = self.host.delete_code(key).await {
                tracing::warn!(key, error = %e, "cannot delete unused function code");
            }
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), ServiceError> {
        let f = self.function(name)?;
        let mut batch = WriteBatch::new();
        batch
            .check_value(
                Table::Functions,
                records::function_key(name),
                Some(records::encode(f.as_ref())),
            )
            .delete(Table::Functions, records::function_key(name))
            .delete(Table::Functions, records::totals_key(name));
        match self.meta.commit(batch).await {
            Ok(()) => {}
            Err(MetaError::Conflict(_)) => {
                lock(&self.records).remove(name);
                return Err(ServiceError::Conflict(format!(
                    "{name} was changed by another request; retry"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        lock(&self.records).remove(name);
        self.changed();
        self.retire(name, None);
        self.meter.forget(name);
        for key in f.code_keys() {
            if let Err(e) = self.host.delete_code(&key).await {
                tracing::warn!(key, error = %e, "cannot delete function code");
            }
        }
        // The invocation records go in the background; a new function of the same name
        // starts with none of them only once this finishes, so do it now.
        self.meter.purge(name).await;
        crate::triggers::purge_dead_letters(self.meta.as_ref(), name).await;
        Ok(())
    }

    /// Publishes `$LATEST` as the next version, unless the newest version already has the
    /// same code and configuration (then that one is returned, as Lambda does).
    pub async fn publish(
        &self,
        name: &str,
        description: Option<String>,
    ) -> Result<(Arc<FunctionRecord>, u32), ServiceError> {
        let f = self.function(name)?;
        if let Some((n, v)) = f.versions.iter().next_back()
            && v.code == f.latest.code
            && v.config == f.latest.config
            && description.is_none()
        {
            return Ok((f.clone(), *n));
        }
        if f.versions.len() >= records::MAX_VERSIONS {
            return Err(ServiceError::InvalidParameter(format!(
                "{name} has {} versions; delete some first",
                records::MAX_VERSIONS
            )));
        }
        let mut next = (*f).clone();
        let n = next.next_version;
        let mut v = next.latest.clone();
        v.modified_ms = now_ms();
        if let Some(d) = description {
            v.config.description = d;
        }
        next.versions.insert(n, v);
        next.next_version += 1;
        let saved = self.save(Some(&f), next).await?;
        Ok((saved, n))
    }

    pub async fn delete_version(&self, name: &str, version: u32) -> Result<(), ServiceError> {
        let f = self.function(name)?;
        if !f.versions.contains_key(&version) {
            return Err(ServiceError::NotFound(format!(
                "{name} has no version {version}"
            )));
        }
        if let Some((alias, _)) = f.aliases.iter().find(|(_, v)| **v == version) {
            return Err(ServiceError::Conflict(format!(
                "alias {alias} points to version {version}; move it first"
            )));
        }
        let mut next = (*f).clone();
        next.versions.remove(&version);
        let saved = self.save(Some(&f), next).await?;
        self.drop_unused_code(&f, &saved).await;
        self.retire(name, Some(&version.to_string()));
        Ok(())
    }

    /// Points `alias` at a published version (creating or moving it).
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u32,
    ) -> Result<Arc<FunctionRecord>, ServiceError> {
        if !records::valid_alias(alias) {
            return Err(ServiceError::InvalidParameter(format!(
                "{alias:?} is not an alias name (letters, digits, '-', '_', not all digits)"
            )));
        }
        let f = self.function(name)?;
        if !f.versions.contains_key(&version) {
            return Err(ServiceError::NotFound(format!(
                "{name} has no version {version}; publish one first"
            )));
        }
        let mut next = (*f).clone();
        next.aliases.insert(alias.to_owned(), version);
        self.save(Some(&f), next).await
    }

    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<(), ServiceError> {
        let f = self.function(name)?;
        if !f.aliases.contains_key(alias) {
            return Err(ServiceError::NotFound(format!(
                "{name} has no alias {alias}"
            )));
        }
        let mut next = (*f).clone();
        next.aliases.remove(alias);
        self.save(Some(&f), next).await?;
        Ok(())
    }

    /// The version a qualifier selects: none or `$LATEST`, a version number, or an alias.
    pub fn resolve<'a>(
        f: &'a FunctionRecord,
        qualifier: Option<&str>,
    ) -> Result<(String, &'a Version), ServiceError> {
        match qualifier {
            None | Some(LATEST) => Ok((LATEST.to_owned(), &f.latest)),
            Some(q) => {
                let n = match q.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => *f.aliases.get(q).ok_or_else(|| {
                        ServiceError::NotFound(format!("{} has no alias {q}", f.name))
                    })?,
                };
                let v = f.versions.get(&n).ok_or_else(|| {
                    ServiceError::NotFound(format!("{} has no version {n}", f.name))
                })?;
                Ok((n.to_string(), v))
            }
        }
    }
}

/// The HTTP status an invocation failure is answered with.
pub fn error_status(e: &FcError) -> u16 {
    match e {
        FcError::Timeout(_) => 504,
        FcError::Internal(_) => 500,
        _ => 502,
    }
}

/// A short name of the failure, for records, metrics and the `x-fc-function-error` header.
pub fn error_kind(e: &FcError) -> &'static str {
    match e {
        FcError::Timeout(_) => "Timeout",
        FcError::MemoryLimit(_) => "MemoryLimit",
        FcError::OutOfFuel => "OutOfFuel",
        FcError::OutputTooLarge(_) => "OutputTooLarge",
        FcError::Exit(_) => "Exit",
        FcError::Trap(_) => "Trap",
        FcError::Handler(_) => "HandlerError",
        FcError::Internal(_) => "Internal",
        FcError::InvalidModule(_)
        | FcError::ModuleTooLarge(_)
        | FcError::NotACommand(_)
        | FcError::NotAHandler(_) => "InvalidCode",
    }
}
