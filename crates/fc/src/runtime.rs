//! The runtime: one wasmtime engine for every function, and one fresh instance per
//! invocation with its own memory limit, wall-clock deadline and optional fuel, and no
//! capability the function was not granted (no files, no sockets, no host environment).
//!
//! Two kinds of function share the engine:
//!
//! - WASI 0.2 components exporting `wasi:http/incoming-handler` — the contract of
//!   `wasmtime serve`, Spin and wasmCloud. They get `wasi:cli` (their stdout and stderr are
//!   the invocation's log), clocks and random, and `wasi:http/outgoing-handler` for hosts
//!   their configuration allows — every other outbound request is refused
//!   (`HttpRequestDenied`); no filesystem and no sockets are granted.
//! - WASI preview-1 command modules speaking CGI (RFC 3875, as WAGI does): the request
//!   arrives as environment variables (`REQUEST_METHOD`, `PATH_INFO`, `QUERY_STRING`,
//!   `CONTENT_TYPE`, `CONTENT_LENGTH`, `HTTP_*`) and the body on stdin; the response is what
//!   the module writes to stdout: header lines (`Status: 404 Not Found`, `Content-Type: …`),
//!   a blank line, then the body. Stderr is the log.
//!
//! Functions are compiled once ([`Runtime::precompile`], whose bytes the service caches on
//! disk and [`Runtime::load`] reads back) and pre-linked (`InstancePre`, `ProxyPre`), so an
//! invocation only instantiates — in a slot of the pooling allocator — and runs. Guests run
//! on the async runtime and yield every epoch tick (10 ms), so a busy guest never holds a
//! worker thread for long and the deadline is a plain timer around the invocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::outbound::Outbound;
use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Largest module accepted (bytes of WebAssembly).
pub const MAX_MODULE_SIZE: usize = 64 << 20;
/// How often the epoch ticks; guests yield to the scheduler at each tick.
const TICK: Duration = Duration::from_millis(10);
/// Largest memory any function may be given.
pub const MAX_MEMORY: usize = 4 << 30;
/// Instances that may exist at once across all functions (pooling allocator slots).
pub const POOL_INSTANCES: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum FcError {
    #[error("not a WebAssembly module or component: {0}")]
    InvalidModule(String),
    #[error("the module is {0} bytes; the limit is {MAX_MODULE_SIZE}")]
    ModuleTooLarge(usize),
    #[error("the module is not a WASI command: {0}")]
    NotACommand(String),
    #[error("the component is not a wasi:http handler: {0}")]
    NotAHandler(String),
    #[error("the function ran past its {0:?} time limit and was stopped")]
    Timeout(Duration),
    #[error("the function tried to use more than {0} bytes of memory and was stopped")]
    MemoryLimit(usize),
    #[error("the function used up its fuel and was stopped")]
    OutOfFuel,
    #[error("the function wrote more than {0} bytes of output")]
    OutputTooLarge(usize),
    #[error("the function exited with status {0}")]
    Exit(i32),
    #[error("the function trapped: {0}")]
    Trap(String),
    #[error("the function answered with an error: {0}")]
    Handler(String),
    #[error("runtime error: {0}")]
    Internal(String),
}

static RECLAIMER: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what hands memory freed by a compilation back to the system (the binary's allocator
/// knows how): compiling a large component allocates hundreds of MiB that the allocator
/// would otherwise keep for the thread that compiled.
pub fn set_reclaimer(f: fn()) {
    let _ = RECLAIMER.set(f);
}

/// Runs the reclaimer when a compilation or load ends, on its thread, whatever the outcome.
struct Reclaim;

impl Drop for Reclaim {
    fn drop(&mut self) {
        if let Some(f) = RECLAIMER.get() {
            f();
        }
    }
}

/// What one invocation may use.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory: usize,
    pub timeout: Duration,
    /// Instructions' worth of fuel; `None` runs on the deadline alone.
    pub fuel: Option<u64>,
    /// Largest response body and log, each.
    pub max_output: usize,
    /// The function's own environment variables (the host's are never passed).
    pub env: Vec<(String, String)>,
    /// Hosts (`name` or `name:port`) a component may send HTTP requests to; none by default.
    pub outbound: Vec<String>,
    /// The addresses outbound requests may reach, region-wide.
    pub policy: std::sync::Arc<crate::outbound::OutboundPolicy>,
    /// The function's name, which its calls to the region carry.
    pub function: String,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: 128 << 20,
            timeout: Duration::from_secs(30),
            fuel: None,
            max_output: 16 << 20,
            env: Vec::new(),
            outbound: Vec::new(),
            policy: std::sync::Arc::new(crate::outbound::OutboundPolicy::new(Vec::new(), [0; 32])),
            function: String::new(),
        }
    }
}

/// An HTTP request handed to a function.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path below the function's own (`/` for its root).
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a function answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What the function wrote to stderr (and, for a component, stdout).
    pub log: Vec<u8>,
    /// The most linear memory the instance held, in bytes.
    pub memory_peak: usize,
}

/// The engines every function runs on, with a clock thread driving their epochs.
pub struct Runtime {
    /// Functions without a fuel limit: no fuel accounting in their code (it costs an
    /// interpreter-heavy guest about a fifth of its speed), pooled instances.
    plain: Side,
    /// Functions with a fuel limit: code that counts fuel, instances allocated on demand.
    fueled: Side,
    stop: Arc<AtomicBool>,
}

/// One engine and what functions may import on it.
struct Side {
    engine: Engine,
    modules: Linker<ModuleGuest>,
    components: wasmtime::component::Linker<HttpGuest>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A compiled, pre-linked function, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    pre: Pre,
    /// Compiled on the fuel-counting engine.
    fuel: bool,
}

#[derive(Clone)]
enum Pre {
    Module(InstancePre<ModuleGuest>),
    Component(ProxyPre<HttpGuest>),
}

impl Compiled {
    pub fn kind(&self) -> &'static str {
        match self.pre {
            Pre::Module(_) => "wasi-p1-cgi",
            Pre::Component(_) => "wasi-http",
        }
    }
}

/// What the limiter saw, readable after the store is gone.
#[derive(Default)]
struct Usage {
    hit: AtomicBool,
    peak: AtomicUsize,
}

struct Limiter {
    memory: usize,
    usage: Arc<Usage>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.usage.hit.store(true, Ordering::Relaxed);
            return Err(wasmtime::format_err!("memory limit"));
        }
        self.usage.peak.fetch_max(desired, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A preview-1 module's instance state: WASI (stdio only) and the limiter.
pub struct ModuleGuest {
    wasi: WasiP1Ctx,
    limiter: Limiter,
}

/// A component's instance state.
pub struct HttpGuest {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Outbound,
    limiter: Limiter,
}

impl WasiView for HttpGuest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpGuest {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

type Sent = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Sent {
        let _ = fut;
        let this = Outbound {
            allowed: self.allowed.clone(),
            policy: self.policy.clone(),
            function: self.function.clone(),
        };
        Box::new(async move {
            let response = this.send(request).await?;
            // The connection is driven by the response body itself.
            let done = async { Ok(()) };
            Ok((
                response,
                Box::new(done) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

impl Side {
    fn new(fuel: bool) -> Result<Self, FcError> {
        let mut config = Config::new();
        if fuel {
            config.consume_fuel(true);
        } else {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_core_instances(POOL_INSTANCES * 4)
                .total_component_instances(POOL_INSTANCES)
                .total_memories(POOL_INSTANCES * 2)
                .total_tables(POOL_INSTANCES * 4)
                .max_memories_per_component(8)
                .max_tables_per_component(16)
                .max_core_instances_per_component(32)
                .table_elements(100_000)
                .max_core_instance_size(4 << 20)
                // Slots are reset with madvise, not kept resident: keeping 256 KiB resident
                // per slot spared a profile's 8 % of TLB shootdowns but moved req/s medians
                // less than the noise, and cost 0.2 MiB per idle slot (BENCHMARKS.md).
                .max_memory_size(MAX_MEMORY);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(internal)?;
        let mut modules = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut modules, |g: &mut ModuleGuest| &mut g.wasi)
            .map_err(internal)?;
        let mut components = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut components).map_err(internal)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut components).map_err(internal)?;
        Ok(Self {
            engine,
            modules,
            components,
        })
    }

    fn link_module(&self, module: &Module, fuel: bool) -> Result<Compiled, FcError> {
        // Build the copy-on-write image of initial memory now, on the compiling thread,
        // rather than lazily in the first request (13 MB for a CPython snapshot).
        module.initialize_copy_on_write_image().map_err(internal)?;
        match module.get_export("_start") {
            Some(wasmtime::ExternType::Func(f))
                if f.params().len() == 0 && f.results().len() == 0 => {}
            _ => {
                return Err(FcError::NotACommand(
                    "it must export a `_start` function taking and returning nothing".into(),
                ));
            }
        }
        let pre = self
            .modules
            .instantiate_pre(module)
            .map_err(|e| FcError::NotACommand(format!("{e:#}")))?;
        Ok(Compiled {
            pre: Pre::Module(pre),
            fuel,
        })
    }

    fn link_component(&self, component: &Component, fuel: bool) -> Result<Compiled, FcError> {
        component
            .initialize_copy_on_write_image()
            .map_err(internal)?;
        let pre = self
            .components
            .instantiate_pre(component)
            .map_err(|e| FcError::NotAHandler(format!("{e:#}")))?;
        let pre = ProxyPre::new(pre).map_err(|e| {
            FcError::NotAHandler(format!(
                "it must export wasi:http/incoming-handler@0.2 ({e:#})"
            ))
        })?;
        Ok(Compiled {
            pre: Pre::Component(pre),
            fuel,
        })
    }
}

impl Runtime {
    pub fn new() -> Result<Self, FcError> {
        let plain = Side::new(false)?;
        let fueled = Side::new(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let engines = [plain.engine.weak(), fueled.engine.weak()];
        let s = stop.clone();
        std::thread::Builder::new()
            .name("fc-clock".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    for e in &engines {
                        match e.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => return,
                        }
                    }
                }
            })
            .map_err(|e| FcError::Internal(e.to_string()))?;
        Ok(Self {
            plain,
            fueled,
            stop,
        })
    }

    fn side(&self, fuel: bool) -> &Side {
        if fuel { &self.fueled } else { &self.plain }
    }

    /// Compiles a module or component and links it against what functions may import.
    pub fn compile(&self, wasm: &[u8]) -> Result<Compiled, FcError> {
        self.precompile(wasm, false).map(|(c, _)| c)
    }

    /// [`Runtime::compile`] for functions that run with a fuel limit.
    pub fn compile_with_fuel(&self, wasm: &[u8]) -> Result<Compiled, FcError> {
        self.precompile(wasm, true).map(|(c, _)| c)
    }

    /// Compiles, links, and returns with the function its serialized form (a kind byte,
    /// `M` or `C`, then the engine's bytes), which [`Runtime::load`] turns back into the same
    /// function without compiling.
    pub fn precompile(&self, wasm: &[u8], fuel: bool) -> Result<(Compiled, Vec<u8>), FcError> {
        let _reclaim = Reclaim;
        let side = self.side(fuel);
        if wasm.len() > MAX_MODULE_SIZE {
            return Err(FcError::ModuleTooLarge(wasm.len()));
        }
        if wasm.get(..4) != Some(b"\0asm") {
            return Err(FcError::InvalidModule(
                "it does not start with the WebAssembly magic".into(),
            ));
        }
        let invalid = |e: wasmtime::Error| FcError::InvalidModule(format!("{e:#}"));
        // A component's header says layer 1 where a core module's says 0.
        if wasm.get(6..8) == Some(&[1, 0]) {
            let component = Component::new(&side.engine, wasm).map_err(invalid)?;
            let mut serialized = vec![b'C'];
            serialized.extend(component.serialize().map_err(internal)?);
            return Ok((side.link_component(&component, fuel)?, serialized));
        }
        let module = Module::new(&side.engine, wasm).map_err(invalid)?;
        let mut serialized = vec![b'M'];
        serialized.extend(module.serialize().map_err(internal)?);
        Ok((side.link_module(&module, fuel)?, serialized))
    }

    /// A function serialized by [`Runtime::precompile`] of an engine with the same
    /// [`Runtime::compatibility`]. The caller vouches for the bytes (the service checks
    /// their checksum): deserializing trusts them as machine code.
    pub fn load(&self, serialized: &[u8], fuel: bool) -> Result<Compiled, FcError> {
        let _reclaim = Reclaim;
        let side = self.side(fuel);
        let invalid = |e: wasmtime::Error| FcError::InvalidModule(format!("{e:#}"));
        match serialized.split_first() {
            // SAFETY (both arms): the bytes are what `serialize` produced on an engine with
            // the same settings, checked against the checksum stored with them; wasmtime
            // refuses bytes of another version or configuration with an error.
            Some((b'C', bytes)) => {
                let c = unsafe { Component::deserialize(&side.engine, bytes) }.map_err(invalid)?;
                side.link_component(&c, fuel)
            }
            Some((b'M', bytes)) => {
                let m = unsafe { Module::deserialize(&side.engine, bytes) }.map_err(invalid)?;
                side.link_module(&m, fuel)
            }
            _ => Err(FcError::InvalidModule("unknown artifact kind".into())),
        }
    }

    /// What a compiled artifact must match to be loaded by the engine (with or without
    /// fuel).
    pub fn compatibility(&self, fuel: bool) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.side(fuel)
            .engine
            .precompile_compatibility_hash()
            .hash(&mut h);
        h.finish()
    }

    /// Runs one request through a compiled function, in a fresh instance, stopped at its
    /// deadline.
    pub async fn invoke(
        &self,
        f: &Compiled,
        req: &Request,
        limits: &Limits,
    ) -> Result<Response, FcError> {
        let usage = Arc::new(Usage::default());
        let limiter = Limiter {
            memory: limits.memory.min(MAX_MEMORY),
            usage: usage.clone(),
        };
        // One byte of room past the limit: a pipe filled beyond the limit means the function
        // tried to write more (the pipe takes partial writes up to its capacity).
        let log = MemoryOutputPipe::new(limits.max_output + 1);
        let run = async {
            match &f.pre {
                Pre::Module(pre) => {
                    self.run_module(pre, f.fuel, req, limits, limiter, &log)
                        .await
                }
                Pre::Component(pre) => {
                    self.run_component(pre, f.fuel, req, limits, limiter, &log)
                        .await
                }
            }
        };
        let result = match tokio::time::timeout(limits.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(FcError::Timeout(limits.timeout)),
        };
        let result = match result {
            Err(FcError::Trap(_) | FcError::Internal(_)) if usage.hit.load(Ordering::Relaxed) => {
                Err(FcError::MemoryLimit(limits.memory))
            }
            r => r,
        };
        let mut resp = result?;
        let l = log.contents();
        resp.log = l[..l.len().min(limits.max_output)].to_vec();
        resp.memory_peak = usage.peak.load(Ordering::Relaxed);
        Ok(resp)
    }

    fn store<T: 'static>(
        &self,
        fuel: bool,
        data: T,
        limits: &Limits,
        limiter: impl (FnMut(&mut T) -> &mut dyn ResourceLimiter) + Send + Sync + 'static,
    ) -> Result<Store<T>, FcError> {
        let mut store = Store::new(&self.side(fuel).engine, data);
        store.limiter(limiter);
        match (fuel, limits.fuel) {
            (true, f) => store.set_fuel(f.unwrap_or(u64::MAX)).map_err(internal)?,
            (false, None) => {}
            (false, Some(_)) => {
                return Err(FcError::Internal(
                    "a fuel limit needs the function compiled with fuel".into(),
                ));
            }
        }
        // Yield at every tick: the deadline is the timer around the invocation.
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }

    async fn run_module(
        &self,
        pre: &InstancePre<ModuleGuest>,
        fuel: bool,
        req: &Request,
        limits: &Limits,
        limiter: Limiter,
        log: &MemoryOutputPipe,
    ) -> Result<Response, FcError> {
        let stdout = MemoryOutputPipe::new(limits.max_output + 1);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(req.body.clone()))
            .stdout(stdout.clone())
            .stderr(log.clone())
            .envs(&limits.env)
            .envs(&cgi_env(req))
            .arg("function");
        let guest = ModuleGuest {
            wasi: wasi.build_p1(),
            limiter,
        };
        let mut store = self.store(fuel, guest, limits, |g: &mut ModuleGuest| {
            &mut g.limiter as &mut dyn ResourceLimiter
        })?;
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance
                .get_typed_func::<(), ()>(&mut store, "_start")?
                .call_async(&mut store, ())
                .await
        }
        .await;
        if stdout.contents().len() > limits.max_output {
            return Err(FcError::OutputTooLarge(limits.max_output));
        }
        // `exit(0)` is a normal end of a command.
        let clean_exit = |e: &wasmtime::Error| {
            e.downcast_ref::<wasmtime_wasi::I32Exit>()
                .is_some_and(|x| x.0 == 0)
        };
        match run {
            Err(e) if !clean_exit(&e) => return Err(trap(e)),
            _ => {}
        }
        Ok(parse_cgi(&stdout.contents()))
    }

    async fn run_component(
        &self,
        pre: &ProxyPre<HttpGuest>,
        fuel: bool,
        req: &Request,
        limits: &Limits,
        limiter: Limiter,
        log: &MemoryOutputPipe,
    ) -> Result<Response, FcError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(log.clone())
            .stderr(log.clone())
            .envs(&limits.env);
        let guest = HttpGuest {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: Outbound {
                allowed: limits.outbound.clone(),
                policy: limits.policy.clone(),
                function: limits.function.clone(),
            },
            limiter,
        };
        let mut store = self.store(fuel, guest, limits, |g: &mut HttpGuest| {
            &mut g.limiter as &mut dyn ResourceLimiter
        })?;
        let uri = if req.query.is_empty() {
            format!("http://function{}", req.path)
        } else {
            format!("http://function{}?{}", req.path, req.query)
        };
        let mut builder = hyper::Request::builder()
            .method(req.method.as_str())
            .uri(uri);
        for (k, v) in &req.headers {
            let lower = k.to_ascii_lowercase();
            // Never hand a function the caller's credentials.
            if lower == "authorization" || lower == "cookie" || lower == "host" {
                continue;
            }
            builder = builder.header(k.as_str(), v.as_str());
        }
        let http_req = builder
            .body(http_body_util::Full::new(Bytes::from(req.body.clone())))
            .map_err(|e| FcError::Internal(format!("request: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, http_req)
            .map_err(internal)?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(tx)
            .map_err(internal)?;
        let pre = pre.clone();
        // The guest runs on its own task: it may keep writing the body after it has set the
        // response. Dropping the handle at the deadline aborts it.
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, out)
                .await
        });
        let mut guard = AbortOnDrop(task);
        let response = match rx.await {
            Ok(Ok(resp)) => resp,
            Ok(Err(code)) => return Err(FcError::Handler(format!("{code:?}"))),
            Err(_) => {
                // The guest dropped the response without setting it: its task says why.
                return Err(match guard.join().await {
                    Ok(()) => FcError::Handler("the function never set a response".into()),
                    Err(e) => e,
                });
            }
        };
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, limits.max_output)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    FcError::OutputTooLarge(limits.max_output)
                } else {
                    FcError::Handler(format!("the response body failed: {e}"))
                }
            })?
            .to_bytes();
        // The handler finishes after its body; its failure after a complete body is logged.
        if let Err(e) = guard.join().await {
            tracing::debug!(error = %e, "function failed after answering");
        }
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            body: body.to_vec(),
            log: Vec::new(),
            memory_peak: 0,
        })
    }
}

/// Aborts the guest's task if the invocation is dropped (its deadline passed).
struct AbortOnDrop(tokio::task::JoinHandle<wasmtime::Result<()>>);

impl AbortOnDrop {
    async fn join(&mut self) -> Result<(), FcError> {
        match (&mut self.0).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(trap(e)),
            Err(e) => Err(FcError::Internal(e.to_string())),
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a guest's failure means.
fn trap(e: wasmtime::Error) -> FcError {
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return FcError::Exit(exit.0);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => FcError::OutOfFuel,
        Some(t) => FcError::Trap(t.to_string()),
        None => FcError::Trap(format!("{e:#}")),
    }
}

fn internal(e: impl std::fmt::Display) -> FcError {
    FcError::Internal(e.to_string())
}

/// RFC 3875 meta-variables for a request.
fn cgi_env(req: &Request) -> Vec<(String, String)> {
    let mut env = vec![
        ("GATEWAY_INTERFACE".to_owned(), "CGI/1.1".to_owned()),
        ("SERVER_PROTOCOL".to_owned(), "HTTP/1.1".to_owned()),
        ("REQUEST_METHOD".to_owned(), req.method.clone()),
        ("PATH_INFO".to_owned(), req.path.clone()),
        ("QUERY_STRING".to_owned(), req.query.clone()),
        ("CONTENT_LENGTH".to_owned(), req.body.len().to_string()),
    ];
    for (k, v) in &req.headers {
        let name = k.to_ascii_uppercase().replace('-', "_");
        match name.as_str() {
            "CONTENT_TYPE" => env.push((name, v.clone())),
            // Never hand a function the caller's credentials.
            "AUTHORIZATION" | "COOKIE" | "CONTENT_LENGTH" => {}
            _ => env.push((format!("HTTP_{name}"), v.clone())),
        }
    }
    env
}

/// Splits CGI output into status, headers and body. Output without a header block is all
/// body, served as `200 text/plain`.
fn parse_cgi(out: &[u8]) -> Response {
    let plain = |body: &[u8]| Response {
        status: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: body.to_vec(),
        log: Vec::new(),
        memory_peak: 0,
    };
    // The header block ends at the first blank line, whichever line ending it uses.
    let lf = out
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    let split = match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    let Some((head_end, body_start)) = split else {
        return plain(out);
    };
    let Ok(head) = std::str::from_utf8(&out[..head_end]) else {
        return plain(out);
    };
    let mut status = 200;
    let mut headers = Vec::new();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            return plain(out);
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name.is_empty() || name.contains(' ') {
            return plain(out);
        }
        if name == "status" {
            status = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .filter(|c| (100..600).contains(c))
                .unwrap_or(502);
        } else {
            headers.push((name, value.to_owned()));
        }
    }
    Response {
        status,
        headers,
        body: out[body_start..].to_vec(),
        log: Vec::new(),
        memory_peak: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_output_is_split_as_rfc_3875_says() {
        let r = parse_cgi(b"Status: 404 Not Found\nContent-Type: text/html\n\n<h1>no</h1>");
        assert_eq!(r.status, 404);
        assert_eq!(r.headers, vec![("content-type".into(), "text/html".into())]);
        assert_eq!(r.body, b"<h1>no</h1>");
        let r = parse_cgi(b"Content-Type: a/b\r\nX-One: 1\r\n\r\nbody\n\nmore");
        assert_eq!(r.status, 200);
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.body, b"body\n\nmore");
        // No header block: everything is body.
        assert_eq!(parse_cgi(b"just text").body, b"just text");
        assert_eq!(parse_cgi(b"hello world\n\nbye").body, b"hello world\n\nbye");
        assert_eq!(parse_cgi(b"Status: banana\n\nx").status, 502);
    }

    #[test]
    fn the_environment_never_carries_credentials() {
        let env = cgi_env(&Request {
            method: "POST".into(),
            path: "/a".into(),
            query: "x=1".into(),
            headers: vec![
                ("Authorization".into(), "AWS4-HMAC-SHA256 secret".into()),
                ("Content-Type".into(), "text/plain".into()),
                ("X-Trace-Id".into(), "7".into()),
            ],
            body: b"abc".to_vec(),
        });
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("REQUEST_METHOD"), Some("POST"));
        assert_eq!(get("CONTENT_LENGTH"), Some("3"));
        assert_eq!(get("CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get("HTTP_X_TRACE_ID"), Some("7"));
        assert!(env.iter().all(|(_, v)| !v.contains("secret")));
    }
}
