;; Echoes the request body back, 64 KiB at a time, and logs one line to stderr.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "Content-Type: application/octet-stream\n\n")
  (data (i32.const 128) "echoing\n")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (local $n i32)
    (call $write (i32.const 2) (i32.const 128) (i32.const 8))
    (call $write (i32.const 1) (i32.const 64) (i32.const 40))
    (block $done
      (loop $more
        (i32.store (i32.const 16) (i32.const 1024))
        (i32.store (i32.const 20) (i32.const 65536))
        (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (local.set $n (i32.load (i32.const 24)))
        (br_if $done (i32.eqz (local.get $n)))
        (call $write (i32.const 1) (i32.const 1024) (local.get $n))
        (br $more)))))
