//! The function service's records in the metadata store (table `functions`):
//!
//! - `f/NAME` → [`FunctionRecord`]: `$LATEST` (code and configuration), published versions,
//!   aliases;
//! - `i/NAME/TIME+SEQ` → [`InvocationRecord`]: one per invocation, with the guest's log;
//! - `t/NAME` → [`Totals`]: the function's metered totals.
//!
//! Records are CBOR; the store's envelope checksums them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest number of published versions a function keeps.
pub const MAX_VERSIONS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionConfig {
    /// Bytes of linear memory an invocation may use.
    pub memory: u64,
    pub timeout_ms: u64,
    /// CPU fuel per invocation (instructions, roughly); none runs on the deadline alone.
    pub fuel: Option<u64>,
    pub env: BTreeMap<String, String>,
    /// Concurrent requests one instance takes.
    pub max_concurrency: u32,
    /// Instances kept warm when idle (provisioned capacity).
    pub min_instances: u32,
    pub max_instances: u32,
    /// Whether `/fc/invoke/NAME` answers unsigned requests (a public function URL). Off by
    /// default: invoking needs `fc:InvokeFunction`.
    pub public: bool,
    pub description: String,
    /// Hosts (`name` or `name:port`) a component may call over `wasi:http`; none by default.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// The execution role (an ARN): each invocation gets temporary credentials of it in
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    #[serde(default)]
    pub role: Option<String>,
}

impl Default for FunctionConfig {
    fn default() -> Self {
        Self {
            memory: 128 << 20,
            timeout_ms: 30_000,
            fuel: None,
            env: BTreeMap::new(),
            max_concurrency: 100,
            min_instances: 0,
            max_instances: 10,
            public: false,
            description: String::new(),
            allow_hosts: Vec::new(),
            role: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    /// Hex SHA-256 of the WebAssembly bytes; names the code object and the compiled cache.
    pub sha256: String,
    pub size: u64,
}

impl Code {
    /// The key of the code object in the system bucket.
    pub fn key(&self, function: &str) -> String {
        format!("{function}/{}.wasm", self.sha256)
    }
}

/// Code and configuration: `$LATEST`, or a published version (immutable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub code: Code,
    pub config: FunctionConfig,
    pub modified_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    /// The owning account.
    pub owner: String,
    pub created_ms: i64,
    pub latest: Version,
    pub versions: BTreeMap<u32, Version>,
    pub aliases: BTreeMap<String, u32>,
    /// Version numbers are never reused, even after the newest is deleted.
    pub next_version: u32,
    /// What invokes the function besides requests: object events and timers.
    #[serde(default)]
    pub triggers: Vec<TriggerSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerSpec {
    pub id: String,
    /// The version or alias invoked (`$LATEST` when none).
    pub qualifier: Option<String>,
    /// Attempts per event or firing before a dead-letter record.
    pub max_attempts: u32,
    pub source: Source,
    /// Events up to this id (microseconds at creation) came before the trigger.
    #[serde(default)]
    pub after_event: u64,
    /// Who set the trigger up (a principal ARN): objects it reads and writes are authorized
    /// as this principal at the time of each read and write, unless the function runs as a
    /// role, which acts then. Triggers stored before it was recorded act as the account.
    #[serde(default)]
    pub acting_as: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Object(ObjectSource),
    Timer {
        schedule: String,
    },
    /// Requests to a host name of the function's own (and, when not `/`, under a path
    /// prefix) reach the function, with their path unchanged.
    Http {
        host: String,
        path: String,
    },
}

/// A route's host name: a DNS name, lower-cased, without a port.
pub fn route_host(host: &str) -> Option<String> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.contains('.')
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // Not an IP address: routes name hosts.
        && !h.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    ok.then_some(h)
}

/// A route's path prefix: starts with `/`, no trailing `/` (but `/` itself), no `.`/`..`
/// segments, no query.
pub fn route_path(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.len() > 1024 || path.contains(['?', '#', '%']) {
        return None;
    }
    let p = path.trim_end_matches('/');
    if p.split('/')
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return None;
    }
    Some(if p.is_empty() { "/".into() } else { p.into() })
}

/// Whether a request path falls under a route's prefix (at a segment boundary).
pub fn under(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSource {
    pub bucket: String,
    pub prefix: String,
    pub suffix: String,
    /// S3 event names without `s3:`, `*` allowed at the end (`ObjectCreated:*`).
    pub events: Vec<String>,
    /// Hand the function the object's bytes (`true`) or the S3 event JSON.
    pub object_body: bool,
    /// Where a 2xx response body is written, under the same key.
    pub output: Option<Output>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub bucket: String,
    pub prefix: String,
}

impl ObjectSource {
    pub fn matches(&self, bucket: &str, key: &str, event: &str) -> bool {
        bucket == self.bucket
            && key.starts_with(&self.prefix)
            && key.ends_with(&self.suffix)
            && self.events.iter().any(|p| match p.strip_suffix('*') {
                Some(stem) => event.starts_with(stem),
                None => event == p,
            })
    }
}

/// An event or firing that failed every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub trigger: String,
    pub time_ms: i64,
    pub attempts: u32,
    pub error: String,
    /// The object event (bucket, key, event name, version) or the timer's firing time.
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub event: Option<String>,
    pub version_id: Option<String>,
}

pub fn dead_letters_prefix(name: &str) -> Vec<u8> {
    format!("d/{name}/").into_bytes()
}

pub fn dead_letter_key(name: &str, id: &str) -> Vec<u8> {
    format!("d/{name}/{id}").into_bytes()
}

impl FunctionRecord {
    /// Every code object a version of this function still uses.
    pub fn code_keys(&self) -> std::collections::BTreeSet<String> {
        std::iter::once(&self.latest)
            .chain(self.versions.values())
            .map(|v| v.code.key(&self.name))
            .collect()
    }
}

/// What started an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Http,
    Api,
    Object { bucket: String, key: String },
    Timer { schedule: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    pub id: String,
    pub function: String,
    /// The version that ran (`$LATEST` or a number) and the qualifier that chose it.
    pub version: String,
    pub qualifier: String,
    pub trigger: Trigger,
    pub started_ms: i64,
    pub duration_us: u64,
    /// Time spent loading the function before it ran (zero when warm).
    pub init_us: u64,
    pub cold: bool,
    /// Configured memory (what is billed) and the most the instance used.
    pub memory: u64,
    pub memory_peak: u64,
    pub gb_seconds: f64,
    /// The HTTP status answered, and `ok` or the kind of failure.
    pub status: u16,
    pub result: String,
    pub error: Option<String>,
    /// The guest's stderr, cut at the service's log limit.
    pub log: String,
    pub log_truncated: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub cold_starts: u64,
    pub duration_us: u64,
    pub gb_seconds: f64,
}

pub fn function_key(name: &str) -> Vec<u8> {
    format!("f/{name}").into_bytes()
}

pub fn invocations_prefix(name: &str) -> Vec<u8> {
    format!("i/{name}/").into_bytes()
}

/// Invocation ids sort by time: 16 hex digits of milliseconds, 8 of a sequence.
pub fn invocation_key(name: &str, id: &str) -> Vec<u8> {
    format!("i/{name}/{id}").into_bytes()
}

pub fn totals_key(name: &str) -> Vec<u8> {
    format!("t/{name}").into_bytes()
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing CBOR into a Vec fails only on a serializer bug.
    if let Err(e) = ciborium::into_writer(v, &mut out) {
        tracing::error!(error = %e, "cannot encode a function record");
    }
    out
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    ciborium::from_reader(bytes).ok()
}

/// Function names as Lambda takes them: 1–64 letters, digits, hyphens, underscores.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Alias names: 1–128 of the same characters, not all digits (those name versions).
pub fn valid_alias(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit())
        && name != "$LATEST"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases() {
        assert!(valid_name("thumbnail_v2-a"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a:b"));
        assert!(valid_alias("live"));
        assert!(!valid_alias("42"));
        assert!(!valid_alias("$LATEST"));
    }

    #[test]
    fn route_hosts_and_paths() {
        assert_eq!(
            route_host("API.Example.com.").as_deref(),
            Some("api.example.com")
        );
        for bad in [
            "",
            "localhost",
            "10.0.0.1",
            "a..b",
            "-a.b",
            "a_b.c",
            "a.b:80",
            "a b.c",
        ] {
            assert_eq!(route_host(bad), None, "{bad}");
        }
        assert_eq!(route_path("/").as_deref(), Some("/"));
        assert_eq!(route_path("/v1/users/").as_deref(), Some("/v1/users"));
        for bad in ["", "v1", "/a//b", "/a/../b", "/a?x=1", "/a/./b", "/%2e%2e"] {
            assert_eq!(route_path(bad), None, "{bad}");
        }
        assert!(under("/", "/anything"));
        assert!(under("/v1", "/v1"));
        assert!(under("/v1", "/v1/users"));
        assert!(!under("/v1", "/v10"));
        assert!(!under("/v1", "/"));
    }

    #[test]
    fn records_round_trip() {
        let r = FunctionRecord {
            name: "f".into(),
            owner: "000000000000".into(),
            created_ms: 1,
            latest: Version {
                code: Code {
                    sha256: "ab".into(),
                    size: 3,
                },
                config: FunctionConfig::default(),
                modified_ms: 2,
            },
            versions: BTreeMap::new(),
            aliases: BTreeMap::from([("live".into(), 1)]),
            next_version: 1,
            triggers: vec![TriggerSpec {
                id: "t".into(),
                qualifier: None,
                max_attempts: 3,
                source: Source::Timer {
                    schedule: "* * * * *".into(),
                },
                after_event: 0,
                acting_as: None,
            }],
        };
        assert_eq!(decode::<FunctionRecord>(&encode(&r)), Some(r));
    }
}
