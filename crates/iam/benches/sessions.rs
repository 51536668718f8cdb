//! STS sessions issued per second with many sessions already live (10k, 100k): AssumeRole
//! and GetSessionToken both end in `Iam::issue_session`. Each issue is one durable commit
//! (fsync) and a map insert; before sessions lived apart from the identity snapshot, each
//! one rebuilt the snapshot from every stored row, so the rate fell with the session count.
//! Plain `harness = false` timing; `cargo bench -p feiyun-iam --bench sessions [N ...]`.

use std::sync::Arc;
use std::time::Instant;

use feiyun_iam::model::SessionSubject;
use feiyun_iam::{Iam, RootKey};
use feiyun_meta::RedbStore;

const MEASURED: usize = 2_000;
const CONCURRENCY: usize = 32;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs benches without `--bench`: a quick smoke run then.
    let smoke = !args.iter().any(|a| a == "--bench");
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = match (smoke, sizes.is_empty()) {
        (true, _) => vec![MEASURED + 100],
        (false, true) => vec![10_000, 100_000],
        (false, false) => sizes,
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for n in sizes {
        rt.block_on(run(n));
    }
}

async fn run(live: usize) {
    let tmp = tempfile::tempdir().expect("tmp");
    let meta = Arc::new(RedbStore::open(&tmp.path().join("meta.redb")).expect("meta"));
    let master = feiyun_kms::MasterKey::from_bytes(&[5; 32]).expect("key");
    let kms = Arc::new(feiyun_kms::Kms::new(meta.clone(), master, "bench"));
    let iam = Iam::open(
        meta,
        RootKey {
            access_key: "ROOT".into(),
            secret_key: "secret".into(),
        },
        kms,
        Some("123456789012".into()),
    )
    .await
    .expect("iam");
    let acct = "123456789012";
    iam.create_user(acct, "bench", None, Vec::new())
        .await
        .expect("user");
    // The last MEASURED sessions are timed: from `live - MEASURED` live sessions to `live`
    // (the region's quota is 100,000, so that is as far as it goes).
    let fill = Instant::now();
    issue_many(&iam, live.saturating_sub(MEASURED), "fill").await;
    let fill = fill.elapsed();
    let t = Instant::now();
    issue_many(&iam, MEASURED, "measured").await;
    let per_sec = MEASURED as f64 / t.elapsed().as_secs_f64();
    let lookups = Instant::now();
    let n = 100_000;
    for i in 0..n {
        std::hint::black_box(iam.caller(if i % 2 == 0 { "ROOT" } else { "ASIAMISSING" }));
    }
    let lookup_ns = lookups.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{live} live sessions (filled in {:.1} s): {per_sec:.0} sessions issued/s over the last {MEASURED} ({CONCURRENCY} concurrent); caller lookup {lookup_ns:.0} ns",
        fill.as_secs_f64()
    );
}

/// Issues `n` sessions, `CONCURRENCY` at a time, from distinct principals (the
/// per-principal quota is 1,000).
async fn issue_many(iam: &Arc<Iam<RedbStore>>, n: usize, tag: &str) {
    let mut next = 0usize;
    while next < n {
        let batch: Vec<_> = (next..(next + CONCURRENCY).min(n))
            .map(|i| {
                let iam = iam.clone();
                let by = format!("arn:aws:iam::123456789012:user/{tag}-{}", i / 500);
                tokio::spawn(async move {
                    iam.issue_session(
                        "123456789012",
                        SessionSubject::User {
                            user: "bench".into(),
                        },
                        3600,
                        None,
                        None,
                        None,
                        &by,
                    )
                    .await
                    .expect("session");
                })
            })
            .collect();
        next += batch.len();
        for t in batch {
            t.await.expect("task");
        }
    }
}
