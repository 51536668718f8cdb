;; Prints its environment, one NAME=VALUE per line (what the region hands a function).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "Content-Type: text/plain\n\n")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (local $len i32) (local $i i32)
    (drop (call $sizes (i32.const 8) (i32.const 12)))
    (local.set $len (i32.load (i32.const 12)))
    (drop (call $environ (i32.const 4096) (i32.const 16384)))
    ;; The strings end in NUL; turn each into a line break.
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.eqz (i32.load8_u (i32.add (i32.const 16384) (local.get $i))))
          (then (i32.store8 (i32.add (i32.const 16384) (local.get $i)) (i32.const 10))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $write (i32.const 64) (i32.const 26))
    (call $write (i32.const 16384) (local.get $len))))
