//! The runtime: one wasmtime engine for every function, and one fresh instance per
//! invocation with its own memory limit, wall-clock deadline and optional fuel, and no
//! capability the function was not granted (no files, no sockets, no host environment).
//!
//! WASI preview-1 command modules speak CGI (RFC 3875, as WAGI does): the request arrives as
//! environment variables (`REQUEST_METHOD`, `PATH_INFO`, `QUERY_STRING`, `CONTENT_TYPE`,
//! `CONTENT_LENGTH`, `HTTP_*`) and the body on stdin; the response is what the module writes
//! to stdout: header lines (`Status: 404 Not Found`, `Content-Type: …`), a blank line, then
//! the body. Stderr is kept as the invocation's log.
//!
//! Modules are compiled once ([`Runtime::precompile`], whose bytes the service caches on
//! disk and [`Runtime::load`] reads back) and pre-linked ([`InstancePre`]), so an invocation
//! only instantiates — in a slot of the pooling allocator — and runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

/// Largest module accepted (bytes of WebAssembly).
pub const MAX_MODULE_SIZE: usize = 64 << 20;
/// How often the deadline clock ticks; a timeout is rounded up to whole ticks.
const TICK: Duration = Duration::from_millis(10);
/// Largest memory any function may be given.
pub const MAX_MEMORY: usize = 4 << 30;
/// Instances that may exist at once across all functions (pooling allocator slots).
pub const POOL_INSTANCES: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum FcError {
    #[error("not a WebAssembly module: {0}")]
    InvalidModule(String),
    #[error("the module is {0} bytes; the limit is {MAX_MODULE_SIZE}")]
    ModuleTooLarge(usize),
    #[error("the module is not a WASI command: {0}")]
    NotACommand(String),
    #[error("WebAssembly components are not supported yet")]
    ComponentUnsupported,
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
    #[error("runtime error: {0}")]
    Internal(String),
}

/// What one invocation may use.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory: usize,
    pub timeout: Duration,
    /// Instructions' worth of fuel; `None` runs on the deadline alone.
    pub fuel: Option<u64>,
    /// Largest response (stdout) and log (stderr), each.
    pub max_output: usize,
    /// The function's own environment variables (the host's are never passed).
    pub env: Vec<(String, String)>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: 128 << 20,
            timeout: Duration::from_secs(30),
            fuel: None,
            max_output: 16 << 20,
            env: Vec::new(),
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
    /// What the function wrote to stderr.
    pub log: Vec<u8>,
    /// The most linear memory the instance held, in bytes.
    pub memory_peak: usize,
}

/// One engine for every function, with a clock thread driving deadlines.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Guest>,
    stop: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A compiled, pre-linked function, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    pre: InstancePre<Guest>,
}

/// Per-instance state: WASI (stdio and nothing else) and the memory limiter.
struct Guest {
    wasi: WasiP1Ctx,
    limiter: Limiter,
}

struct Limiter {
    memory: usize,
    hit: bool,
    peak: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.hit = true;
            return Err(wasmtime::format_err!("memory limit"));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl Runtime {
    pub fn new() -> Result<Self, FcError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(POOL_INSTANCES)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES)
            .max_memory_size(MAX_MEMORY);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .consume_fuel(true);
        let engine = Engine::new(&config).map_err(internal)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |g: &mut Guest| &mut g.wasi)
            .map_err(internal)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("fc-clock".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match e.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| FcError::Internal(e.to_string()))?;
        Ok(Self {
            engine,
            linker,
            stop,
        })
    }

    /// Compiles a module and links it against what functions may import (WASI preview 1).
    pub fn compile(&self, wasm: &[u8]) -> Result<Compiled, FcError> {
        self.precompile(wasm).map(|(c, _)| c)
    }

    /// Compiles a module, links it, and returns with it the engine's serialized form, which
    /// [`Runtime::load`] turns back into the same function without compiling.
    pub fn precompile(&self, wasm: &[u8]) -> Result<(Compiled, Vec<u8>), FcError> {
        if wasm.len() > MAX_MODULE_SIZE {
            return Err(FcError::ModuleTooLarge(wasm.len()));
        }
        if wasm.get(..4) != Some(b"\0asm") {
            return Err(FcError::InvalidModule(
                "it does not start with the WebAssembly magic".into(),
            ));
        }
        // A component's header says layer 1 where a core module's says 0.
        if wasm.get(6..8) == Some(&[1, 0]) {
            return Err(FcError::ComponentUnsupported);
        }
        let module = Module::new(&self.engine, wasm)
            .map_err(|e| FcError::InvalidModule(format!("{e:#}")))?;
        let serialized = module.serialize().map_err(internal)?;
        Ok((self.link(&module)?, serialized))
    }

    /// A module serialized by [`Runtime::precompile`] of an engine with the same
    /// [`Runtime::compatibility`]. The caller vouches for the bytes (the service checks
    /// their checksum): deserializing trusts them as machine code.
    pub fn load(&self, serialized: &[u8]) -> Result<Compiled, FcError> {
        // SAFETY: the bytes are what `Module::serialize` produced on an engine with the same
        // settings, checked against the checksum stored with them; wasmtime refuses bytes of
        // another version or configuration with an error.
        let module = unsafe { Module::deserialize(&self.engine, serialized) }
            .map_err(|e| FcError::InvalidModule(format!("{e:#}")))?;
        self.link(&module)
    }

    /// What a compiled artifact must match to be loaded by this engine.
    pub fn compatibility(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        h.finish()
    }

    fn link(&self, module: &Module) -> Result<Compiled, FcError> {
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
            .linker
            .instantiate_pre(module)
            .map_err(|e| FcError::NotACommand(format!("{e:#}")))?;
        Ok(Compiled { pre })
    }

    /// Runs one request through a compiled function (blocking: call it off the async
    /// runtime).
    pub fn invoke(
        &self,
        f: &Compiled,
        req: &Request,
        limits: &Limits,
    ) -> Result<Response, FcError> {
        // One byte of room past the limit: a pipe filled beyond the limit means the function
        // tried to write more (the pipe takes partial writes up to its capacity).
        let stdout = MemoryOutputPipe::new(limits.max_output + 1);
        let stderr = MemoryOutputPipe::new(limits.max_output + 1);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(req.body.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .envs(&limits.env)
            .envs(&cgi_env(req))
            .arg("function");
        let guest = Guest {
            wasi: wasi.build_p1(),
            limiter: Limiter {
                memory: limits.memory.min(MAX_MEMORY),
                hit: false,
                peak: 0,
            },
        };
        let mut store = Store::new(&self.engine, guest);
        store.limiter(|g| &mut g.limiter);
        store
            .set_fuel(limits.fuel.unwrap_or(u64::MAX))
            .map_err(internal)?;
        let ticks = limits.timeout.as_millis().div_ceil(TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        let run = f.pre.instantiate(&mut store).and_then(|instance| {
            instance
                .get_typed_func::<(), ()>(&mut store, "_start")?
                .call(&mut store, ())
        });
        if stdout.contents().len() > limits.max_output {
            return Err(FcError::OutputTooLarge(limits.max_output));
        }
        if let Err(e) = run {
            if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                if exit.0 != 0 {
                    return Err(FcError::Exit(exit.0));
                }
            } else if store.data().limiter.hit {
                return Err(FcError::MemoryLimit(limits.memory));
            } else {
                return Err(match e.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => FcError::Timeout(limits.timeout),
                    Some(Trap::OutOfFuel) => FcError::OutOfFuel,
                    Some(t) => FcError::Trap(t.to_string()),
                    None => FcError::Trap(format!("{e:#}")),
                });
            }
        }
        let mut resp = parse_cgi(&stdout.contents());
        let log = stderr.contents();
        resp.log = log[..log.len().min(limits.max_output)].to_vec();
        resp.memory_peak = store.data().limiter.peak;
        Ok(resp)
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
