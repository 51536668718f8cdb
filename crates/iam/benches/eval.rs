//! Evaluations per second of the policy evaluator alone, on the BENCHMARKS.md workload: a
//! GetObject by an IAM user whose own policy allows it, against a 20-statement bucket policy
//! (every statement is examined, since any could deny). Plain `harness = false` timing: five
//! runs of one second each, median reported.

use std::time::{Duration, Instant};

use feiyun_iam::bucket::parse_bucket_policy;
use feiyun_iam::{Policy, PolicyKind, PolicySet, Principal, Request, RequestContext};

fn main() {
    let account = "123456789012";
    let fill = |s: &str| {
        s.replace("ACCOUNT", account)
            .replace("BUCKET", "feiyun-bench")
    };
    let bucket = parse_bucket_policy("feiyun-bench", &fill(include_str!("bucket-policy-20.json")))
        .expect("bucket policy");
    let user = Policy::parse(
        &fill(include_str!("user-policy.json")),
        PolicyKind::Identity,
    )
    .expect("user policy");
    assert_eq!(bucket.statements.len(), 20);
    let principal = Principal {
        account: account.into(),
        arn: format!("arn:aws:iam::{account}:user/bench"),
        role_arn: None,
        is_root: false,
        federated: None,
    };
    let mut cx = RequestContext::default();
    cx.set("aws:SourceIp", "127.0.0.1");
    cx.set("aws:SecureTransport", "false");
    cx.set("aws:username", "bench");
    cx.set("aws:PrincipalArn", principal.arn.clone());
    cx.set("aws:UserAgent", "feiyun-bench");
    cx.set("aws:CurrentTime", "2026-11-24T12:00:00Z");
    let set = PolicySet {
        identity: vec![("user/bench:inline/bench", &user)],
        resource: Some(("bucket-policy", &bucket)),
        session: None,
        same_account: true,
    };
    let req = Request {
        action: "s3:GetObject",
        resource: "arn:aws:s3:::feiyun-bench/obj-00042",
        principal: Some(&principal),
        context: &cx,
    };
    assert!(set.decide(&req).allowed());
    let mut rates = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            for _ in 0..1000 {
                std::hint::black_box(set.decide(std::hint::black_box(&req)));
            }
            n += 1000;
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "policy evaluation (user policy + 20-statement bucket policy, GetObject): median {:.0} evaluations/s per core (runs: {})",
        rates[2],
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
