//! Function Compute: serverless WebAssembly functions next to the data.
//!
//! - [`runtime`]: the wasmtime engine and one invocation (limits, capabilities, CGI);
//! - [`service`]: functions, versions and aliases, the compiled-artifact cache, admission
//!   and invocation;
//! - [`scale`]: the autoscaler's arithmetic (Knative's stable and panic windows);
//! - [`meter`]: invocation records, logs, totals and Prometheus series;
//! - [`host`]: what functions use of the region: code in its system bucket, objects,
//!   the event log;
//! - [`triggers`]: object-event and timer triggers, retries and dead letters;
//! - [`cron`]: cron expressions;
//! - [`api`]: the `/fc/` HTTP edge.

pub mod api;
pub mod cron;
pub mod host;
pub mod meter;
pub mod outbound;
pub mod records;
pub mod runtime;
pub mod scale;
pub mod service;
pub mod triggers;

pub use runtime::{
    Compiled, FcError, Limits, MAX_MEMORY, MAX_MODULE_SIZE, Request, Response, Runtime,
};
pub use service::{Functions, ServiceError, Settings};
