//! The runtime against real WebAssembly (guests in `tests/guests/*.wat`, compiled here):
//! CGI requests and responses, the limits that stop a function (time, memory, fuel, output)
//! while the host and other functions go on, deny-by-default capabilities, and bad modules.

use std::time::{Duration, Instant};

use feiyun_fc::{Compiled, FcError, Limits, Request, Response, Runtime};

fn guest(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/guests/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn module(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("test module")
}

/// One invocation on a runtime of its own (the runtime is async; these tests are not).
fn invoke(rt: &Runtime, f: &Compiled, req: &Request, limits: &Limits) -> Result<Response, FcError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio")
        .block_on(rt.invoke(f, req, limits))
}

fn get() -> Request {
    Request {
        method: "GET".into(),
        path: "/".into(),
        ..Request::default()
    }
}

#[test]
fn hello_answers_over_cgi() {
    let rt = Runtime::new().unwrap();
    let f = rt.compile(&guest("hello")).unwrap();
    let r = invoke(&rt, &f, &get(), &Limits::default()).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers,
        vec![("content-type".into(), "text/plain".into())]
    );
    assert_eq!(r.body, b"hello from wasm\n");
    // The same compiled function serves again from a fresh instance.
    assert_eq!(
        invoke(&rt, &f, &get(), &Limits::default()).unwrap().body,
        b"hello from wasm\n"
    );
}

#[test]
fn echo_returns_the_body_and_keeps_the_log() {
    let rt = Runtime::new().unwrap();
    let f = rt.compile(&guest("echo")).unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let req = Request {
        method: "POST".into(),
        body: body.clone(),
        ..get()
    };
    let r = invoke(&rt, &f, &req, &Limits::default()).unwrap();
    assert_eq!(r.body, body);
    assert_eq!(r.log, b"echoing\n");
    // Output beyond the limit stops the function instead of growing without bound.
    let small = Limits {
        max_output: 1000,
        ..Limits::default()
    };
    assert!(matches!(
        invoke(&rt, &f, &req, &small),
        Err(FcError::OutputTooLarge(1000))
    ));
}

#[test]
fn a_loop_forever_is_stopped_at_its_deadline_and_others_go_on() {
    let rt = Runtime::new().unwrap();
    let spin = rt
        .compile(&module(
            r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#,
        ))
        .unwrap();
    let hello = rt.compile(&guest("hello")).unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let t = Instant::now();
    let e = invoke(&rt, &spin, &get(), &limits).unwrap_err();
    assert!(matches!(e, FcError::Timeout(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Fuel stops it too, without waiting for the clock (compiled to count fuel).
    let spin_fueled = rt
        .compile_with_fuel(&module(
            r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#,
        ))
        .unwrap();
    let fueled = Limits {
        fuel: Some(1_000_000),
        ..Limits::default()
    };
    assert!(matches!(
        invoke(&rt, &spin_fueled, &get(), &fueled),
        Err(FcError::OutOfFuel)
    ));
    // A fuel limit on code compiled without fuel is refused rather than ignored.
    assert!(invoke(&rt, &spin, &get(), &fueled).is_err());
    assert_eq!(invoke(&rt, &hello, &get(), &limits).unwrap().status, 200);
}

#[test]
fn memory_beyond_the_limit_stops_the_function() {
    let rt = Runtime::new().unwrap();
    let hog = rt
        .compile(&module(
            r#"(module (memory (export "memory") 1)
                 (func (export "_start") (drop (memory.grow (i32.const 1000)))))"#,
        ))
        .unwrap();
    let limits = Limits {
        memory: 16 << 20,
        ..Limits::default()
    };
    let e = invoke(&rt, &hog, &get(), &limits).unwrap_err();
    assert!(matches!(e, FcError::MemoryLimit(_)), "{e}");
    // Within a larger limit the same growth is fine.
    let big = Limits {
        memory: 128 << 20,
        ..Limits::default()
    };
    invoke(&rt, &hog, &get(), &big).unwrap();
}

#[test]
fn traps_and_exit_codes_are_errors_not_crashes() {
    let rt = Runtime::new().unwrap();
    let trap = rt
        .compile(&module(
            r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
        ))
        .unwrap();
    assert!(matches!(
        invoke(&rt, &trap, &get(), &Limits::default()),
        Err(FcError::Trap(_))
    ));
    let exit = rt
        .compile(&module(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                 (memory (export "memory") 1)
                 (func (export "_start") (call $exit (i32.const 3))))"#,
        ))
        .unwrap();
    assert!(matches!(
        invoke(&rt, &exit, &get(), &Limits::default()),
        Err(FcError::Exit(3))
    ));
}

#[test]
fn files_and_sockets_are_denied_by_default() {
    let rt = Runtime::new().unwrap();
    let f = rt.compile(&guest("escape")).unwrap();
    let r = invoke(&rt, &f, &get(), &Limits::default()).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "file denied\nsocket denied\n"
    );
}

#[test]
fn bad_modules_are_refused_with_a_reason() {
    let rt = Runtime::new().unwrap();
    assert!(matches!(
        rt.compile(b"hello"),
        Err(FcError::InvalidModule(_))
    ));
    assert!(matches!(
        rt.compile(b"\0asm\x01\0\0\0\x01\xff"),
        Err(FcError::InvalidModule(_))
    ));
    assert!(matches!(
        rt.compile(&module(r#"(module (func (export "main")))"#)),
        Err(FcError::NotACommand(_))
    ));
    assert!(matches!(
        rt.compile(&module(
            r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#
        )),
        Err(FcError::NotACommand(_))
    ));
    // A component that is not a wasi:http handler (here: one that exports nothing).
    assert!(matches!(
        rt.compile(b"\0asm\x0d\0\x01\0"),
        Err(FcError::NotAHandler(_))
    ));
    let huge = vec![0u8; feiyun_fc::MAX_MODULE_SIZE + 1];
    assert!(matches!(rt.compile(&huge), Err(FcError::ModuleTooLarge(_))));
}

/// An example function built by `examples/functions/build.sh` (committed).
fn example(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../examples/functions/{name}/hello.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn a_wasi_http_component_written_in_c_answers() {
    let rt = Runtime::new().unwrap();
    let f = rt.compile(&example("hello-c")).unwrap();
    assert_eq!(f.kind(), "wasi-http");
    let req = Request {
        headers: vec![
            ("Authorization".into(), "AWS4-HMAC-SHA256 secret".into()),
            ("X-Trace".into(), "1".into()),
        ],
        query: "a=1".into(),
        ..get()
    };
    for _ in 0..3 {
        let r = invoke(&rt, &f, &req, &Limits::default()).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello from c\n");
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| k == "content-type" && v == "text/plain"),
            "{:?}",
            r.headers
        );
        assert!(r.memory_peak > 0);
    }
    // Too little memory to instantiate is the memory limit, not a crash.
    let tiny = Limits {
        memory: 64 << 10,
        ..Limits::default()
    };
    assert!(matches!(
        invoke(&rt, &f, &get(), &tiny),
        Err(FcError::MemoryLimit(_))
    ));
    // So little fuel that it cannot finish.
    let starved = Limits {
        fuel: Some(10),
        ..Limits::default()
    };
    let metered = rt.compile_with_fuel(&example("hello-c")).unwrap();
    assert!(matches!(
        invoke(&rt, &metered, &get(), &starved),
        Err(FcError::OutOfFuel)
    ));
    assert_eq!(
        invoke(&rt, &metered, &get(), &Limits::default())
            .unwrap()
            .body,
        b"hello from c\n"
    );
}

#[test]
fn compiled_artifacts_load_back_for_modules_and_components() {
    let rt = Runtime::new().unwrap();
    for wasm in [guest("hello"), example("hello-c")] {
        let (_, artifact) = rt.precompile(&wasm, false).unwrap();
        let loaded = rt.load(&artifact, false).unwrap();
        // An artifact of the other engine is refused, not run.
        assert!(rt.load(&artifact, true).is_err());
        let r = invoke(&rt, &loaded, &get(), &Limits::default()).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.starts_with(b"hello from"));
        // The kind byte is checked, and a cut artifact is refused rather than run.
        let mut wrong = artifact.clone();
        wrong[0] = b'X';
        assert!(rt.load(&wrong, false).is_err());
        assert!(rt.load(&artifact[..artifact.len() / 2], false).is_err());
    }
}
