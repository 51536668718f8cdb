//! Invocation: per-version instance pools, admission against the concurrency and memory
//! limits, running a request in an instance, compiling or loading a module, and the autoscaler.

use super::*;

impl<M: MetaStore> Functions<M> {
    /// What an invocation of a version may use, and the environment the region gives it:
    /// the function's own variables, its name, version and region, and — for a function
    /// with a role — the region's endpoint, which it may then call.
    pub(super) fn limits(&self, name: &str, label: &str, c: &FunctionConfig) -> Limits {
        let mut env: Vec<(String, String)> =
            c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let region = &self.settings.region;
        env.extend([
            ("AWS_REGION".to_owned(), region.clone()),
            ("AWS_DEFAULT_REGION".to_owned(), region.clone()),
            ("FC_FUNCTION_NAME".to_owned(), name.to_owned()),
            ("FC_FUNCTION_VERSION".to_owned(), label.to_owned()),
        ]);
        let mut outbound = c.allow_hosts.clone();
        if c.role.is_some()
            && let Some(url) = self.endpoint.get()
        {
            env.push(("AWS_ENDPOINT_URL".to_owned(), url.clone()));
            if let Some(authority) = url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.authority().map(|a| a.to_string()))
            {
                outbound.push(authority);
            }
        }
        Limits {
            memory: c.memory as usize,
            timeout: Duration::from_millis(c.timeout_ms),
            fuel: c.fuel,
            max_output: MAX_RESPONSE,
            env,
            outbound,
            policy: self.outbound_policy(),
            function: name.to_owned(),
        }
    }

    /// The warm state of one version, created on first use.
    pub(super) fn pool(&self, f: &FunctionRecord, label: &str, version: &Version) -> Arc<Pool> {
        let key = format!("{}@{label}", f.name);
        let mut pools = lock(&self.pools);
        if let Some(p) = pools.get(&key)
            && p.version == *version
        {
            return p.clone();
        }
        let c = &version.config;
        let policy = Policy {
            per_instance: c.max_concurrency.max(1),
            min: c.min_instances,
            max: c.max_instances.max(1),
            stable_window: self.settings.stable_window,
            idle: self.settings.idle,
        };
        let pool = Arc::new(Pool {
            name: f.name.clone(),
            label: label.to_owned(),
            version: version.clone(),
            scaler: Mutex::new(Scaler::new(policy, Instant::now())),
            room: Notify::new(),
            compiled: tokio::sync::Mutex::new(None),
            limits: self.limits(&f.name, label, c),
        });
        self.meter.instances(&f.name, label, i64::from(policy.min));
        pools.insert(key, pool.clone());
        pool
    }

    /// Forgets the warm state of one version of `name`, or of all its versions.
    pub(super) fn retire(&self, name: &str, label: Option<&str>) {
        lock(&self.pools).retain(|_, p| {
            let keep = p.name != name || label.is_some_and(|l| l != p.label);
            if !keep {
                self.meter.instances(&p.name, &p.label, 0);
            }
            keep
        });
    }

    /// Runs one request. `qualifier` picks the version; the caller has authorized it.
    pub async fn invoke(
        &self,
        f: &FunctionRecord,
        qualifier: Option<&str>,
        req: Request,
        trigger: Trigger,
    ) -> Result<Invoked, ServiceError> {
        let (label, version) = Self::resolve(f, qualifier)?;
        if req.body.len() > MAX_REQUEST {
            return Err(ServiceError::InvalidParameter(format!(
                "the request body is larger than {MAX_REQUEST} bytes"
            )));
        }
        let pool = self.pool(f, &label, version);
        let qualifier = qualifier.unwrap_or(LATEST).to_owned();
        let started_ms = now_ms();
        let start = Instant::now();
        let admitted = match self.admit(&pool).await {
            Ok(a) => a,
            Err(e) => {
                self.meter.throttled(&f.name);
                return Err(e);
            }
        };
        let outcome = self.run(&pool, req, admitted.cold).await;
        drop(admitted);
        let duration = start.elapsed();
        let (cold, init) = outcome.1;
        let id = self.meter.next_id(started_ms);
        let config = &version.config;
        let gb_seconds = config.memory as f64 / f64::from(1u32 << 30) * duration.as_secs_f64();
        let (status, result, error, log, peak) = match &outcome.0 {
            Ok(r) => (
                r.status,
                "ok".to_owned(),
                None,
                r.log.clone(),
                r.memory_peak,
            ),
            Err(e) => (
                error_status(e),
                error_kind(e).to_owned(),
                Some(e.to_string()),
                Vec::new(),
                0,
            ),
        };
        let log_truncated = log.len() > self.settings.max_log;
        let log =
            String::from_utf8_lossy(&log[..log.len().min(self.settings.max_log)]).into_owned();
        self.meter.record(
            InvocationRecord {
                id: id.clone(),
                function: f.name.clone(),
                version: label.clone(),
                qualifier,
                trigger,
                started_ms,
                duration_us: duration.as_micros() as u64,
                init_us: init.as_micros() as u64,
                cold,
                memory: config.memory,
                memory_peak: peak as u64,
                gb_seconds,
                status,
                result: result.clone(),
                error,
                log,
                log_truncated,
            },
            Outcome {
                ok: outcome.0.is_ok(),
                duration,
            },
        );
        match outcome.0 {
            Ok(response) => Ok(Invoked {
                response,
                id,
                version: label,
                duration,
                cold,
            }),
            Err(e) => Err(ServiceError::Function(e)),
        }
    }

    /// Waits for room in the function's instances (adding one when allowed) and for a
    /// region-wide slot, each at most the queue wait.
    pub(super) async fn admit(&self, pool: &Arc<Pool>) -> Result<Admitted, ServiceError> {
        let deadline = tokio::time::Instant::now() + self.settings.queue_wait;
        let retry_after = Duration::from_secs(1);
        let cold;
        loop {
            let notified = pool.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let admitted = {
                let mut s = lock(&pool.scaler);
                s.try_admit(Instant::now()).map(|c| (c, s.instances))
            };
            match admitted {
                Ok((changed, n)) => {
                    if let Some(reason) = changed {
                        self.scaled(pool, n - 1, n, reason);
                    }
                    // Scaling up from no instance is what a cold start is.
                    cold = changed.is_some() && n == 1;
                    break;
                }
                Err(crate::scale::AtCapacity) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(ServiceError::Throttled { retry_after });
                    }
                }
            }
        }
        let mut admitted = Admitted {
            pool: pool.clone(),
            slot: None,
            memory: None,
            share: None,
            cold,
        };
        // One function may hold only its share of the memory budget: beyond it, its own
        // callers wait (429) while other functions still run.
        let need = pool.version.config.memory.div_ceil(1 << 20).max(1);
        let cap = self.settings.memory_budget_mib * self.settings.function_share_percent / 100;
        let held = lock(&self.shares)
            .entry(pool.name.clone())
            .or_default()
            .clone();
        let taken = held.fetch_add(need, std::sync::atomic::Ordering::SeqCst) + need;
        admitted.share = Some((held, need));
        if taken > cap.max(need) {
            return Err(ServiceError::Throttled { retry_after });
        }
        match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => admitted.slot = Some(permit),
            _ => return Err(ServiceError::Unavailable { retry_after }),
        }
        let units = u32::try_from(need).unwrap_or(u32::MAX);
        match tokio::time::timeout_at(deadline, self.memory.clone().acquire_many_owned(units)).await
        {
            Ok(Ok(permit)) => {
                admitted.memory = Some(permit);
                Ok(admitted)
            }
            _ => Err(ServiceError::Unavailable { retry_after }),
        }
    }

    pub(super) fn scaled(&self, pool: &Pool, from: u32, to: u32, reason: Reason) {
        tracing::info!(
            function = %pool.name,
            version = %pool.label,
            from,
            to,
            reason = reason.as_str(),
            "function scaled"
        );
        self.meter
            .scaled(&pool.name, &pool.label, i64::from(to), from < to, reason);
    }

    /// Loads the code if the pool has none in memory, then runs the request off the async
    /// runtime. Returns whether this was a cold start and how long loading took.
    pub(super) async fn run(
        &self,
        pool: &Arc<Pool>,
        req: Request,
        scaled_from_zero: bool,
    ) -> (Result<Response, FcError>, (bool, Duration)) {
        let t = Instant::now();
        let (compiled, loaded) = {
            let mut slot = pool.compiled.lock().await;
            match slot.as_ref() {
                Some(c) => (c.clone(), false),
                None => match self.load(&pool.name, &pool.version).await {
                    Ok(c) => {
                        *slot = Some(c.clone());
                        (c, true)
                    }
                    Err(e) => {
                        tracing::error!(function = %pool.name, error = %e, "cannot load function");
                        return (Err(FcError::Internal(e.to_string())), (true, t.elapsed()));
                    }
                },
            }
        };
        let init = t.elapsed();
        // A request that found no instance warm is a cold start, whether or not the code
        // was still in memory.
        let cold = loaded || scaled_from_zero;
        let r = match &pool.version.config.role {
            None => self.runtime.invoke(&compiled, &req, &pool.limits).await,
            Some(role) => match self.role_credentials(&pool.name, role).await {
                Ok(c) => {
                    let mut limits = pool.limits.clone();
                    limits.env.extend([
                        ("AWS_ACCESS_KEY_ID".to_owned(), c.access_key),
                        ("AWS_SECRET_ACCESS_KEY".to_owned(), c.secret_key),
                        ("AWS_SESSION_TOKEN".to_owned(), c.session_token),
                    ]);
                    self.runtime.invoke(&compiled, &req, &limits).await
                }
                Err(e) => Err(FcError::Internal(e)),
            },
        };
        (r, (cold, init))
    }

    /// The function's code, compiled: from the on-disk cache when it holds a good artifact
    /// for this engine, else compiled again from the code object (and cached).
    pub(super) async fn load(
        &self,
        name: &str,
        version: &Version,
    ) -> Result<Compiled, ServiceError> {
        let (code, fuel) = (&version.code, version.config.fuel.is_some());
        if let Some(c) = self.load_cached(code, fuel).await {
            return Ok(c);
        }
        let wasm = self
            .host
            .get_code(&code.key(name), runtime::MAX_MODULE_SIZE)
            .await?;
        if hex::encode(Sha256::digest(&wasm)) != code.sha256 {
            return Err(ServiceError::Internal(format!(
                "the code object of {name} does not match its SHA-256"
            )));
        }
        let rt = self.runtime.clone();
        let (compiled, serialized) =
            tokio::task::spawn_blocking(move || rt.precompile(&wasm, fuel))
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))?
                .map_err(ServiceError::InvalidCode)?;
        self.cache_store(code, fuel, serialized).await;
        Ok(compiled)
    }

    /// The compiled artifact of `code` from the on-disk cache, if it holds a good one.
    pub(super) async fn load_cached(&self, code: &Code, fuel: bool) -> Option<Compiled> {
        let path = self.cache_path(code, fuel);
        let rt = self.runtime.clone();
        let key = self.settings.artifact_key;
        tokio::task::spawn_blocking(move || {
            let bytes = read_artifact(&key, &path)?;
            rt.load(&bytes, fuel).ok()
        })
        .await
        .ok()
        .flatten()
    }

    pub(super) fn cache_path(&self, code: &Code, fuel: bool) -> PathBuf {
        self.settings.cache_dir.join(format!(
            "{}-{:016x}.cwasm",
            code.sha256,
            self.runtime.compatibility(fuel)
        ))
    }

    /// Writes a compiled artifact with its checksum; a failure only costs a recompile.
    pub(super) async fn cache_store(&self, code: &Code, fuel: bool, serialized: Vec<u8>) {
        let path = self.cache_path(code, fuel);
        let key = self.settings.artifact_key;
        let r = tokio::task::spawn_blocking(move || write_artifact(&key, &path, &serialized)).await;
        if let Ok(Err(e)) | Err(e) = r.map_err(std::io::Error::other) {
            tracing::warn!(error = %e, "cannot cache a compiled function");
        }
    }

    pub(super) fn spawn_autoscaler(self: Arc<Self>) {
        let period = (self.settings.stable_window / 30)
            .clamp(Duration::from_millis(50), Duration::from_secs(2));
        let weak = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(svc) = weak.upgrade() else { break };
                svc.autoscale().await;
            }
        });
    }

    pub(super) async fn autoscale(&self) {
        let pools: Vec<Arc<Pool>> = lock(&self.pools).values().cloned().collect();
        for pool in pools {
            let (changed, instances) = {
                let mut s = lock(&pool.scaler);
                let c = s.tick(Instant::now());
                (c, s.instances)
            };
            if let Some((from, reason)) = changed {
                self.scaled(&pool, from, instances, reason);
                // More room: wake the queue.
                pool.room.notify_waiters();
            }
            // Provisioned capacity is warm: its code is loaded before a request needs it.
            if instances > 0 && pool.compiled.lock().await.is_none() {
                match self.load(&pool.name, &pool.version).await {
                    Ok(c) => *pool.compiled.lock().await = Some(c),
                    Err(e) => tracing::warn!(function = %pool.name, error = %e, "cannot pre-load"),
                }
            }
        }
    }
}

/// Holds a request's place in its pool and its region-wide slot.
pub(super) struct Admitted {
    pool: Arc<Pool>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Its memory limit's worth of the region's budget.
    memory: Option<tokio::sync::OwnedSemaphorePermit>,
    /// What it adds to its function's share, given back on drop.
    share: Option<(Arc<std::sync::atomic::AtomicU64>, u64)>,
    /// The request scaled its function up from zero instances.
    cold: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.slot.take();
        self.memory.take();
        if let Some((held, n)) = self.share.take() {
            held.fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
        }
        lock(&self.pool.scaler).release(Instant::now());
        self.pool.room.notify_one();
    }
}
