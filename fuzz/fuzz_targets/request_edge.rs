//! The request-parsing edge: everything the server reads from a request before any secret is
//! looked up — the Authorization header, presigned query parameters, the relay mark, the
//! copy source — fed arbitrary bytes. None may panic; what screening accepts must also parse
//! as SigV4. Run: `cargo fuzz run request_edge -- -max_total_time=300` (from `fuzz/`).

#![no_main]

use feiyun_iam::screen::{Expect, Shape, screen};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let auth = parts.next().unwrap_or("");
    let query = parts.next().unwrap_or("");
    let names: Vec<&str> = parts.next().unwrap_or("").split(',').collect();
    let shape = Shape {
        authorization: (!auth.is_empty()).then_some(auth),
        query,
        header_names: &names,
    };
    let expect = Expect {
        region: "us-east-1",
        services: &["s3"],
        global: false,
    };
    if let Ok(feiyun_iam::screen::AuthKind::Header) = screen(&shape, &expect)
        && auth.starts_with("AWS4-HMAC-SHA256")
    {
        assert!(feiyun_iam::sigv4::parse_authorization(auth).is_some_and(|r| r.is_ok()));
    }
    let _ = feiyun_iam::relay::RelayMark::parse(&text);
    let _ = s3s::dto::CopySource::parse(&text);
    let _ = feiyun_iam::sigv4::percent_decode(&text);
});
