;; Tries to open /etc/passwd through file descriptor 3 (a preopened directory, if it were
;; granted) and to accept a connection on it; answers "denied" for each attempt refused.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept"
    (func $sock_accept (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "/etc/passwd")
  (data (i32.const 200) "Content-Type: text/plain\n\n")
  (data (i32.const 300) "file denied\n")
  (data (i32.const 320) "file OPENED\n")
  (data (i32.const 340) "socket denied\n")
  (data (i32.const 360) "socket OPENED\n")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (call $write (i32.const 200) (i32.const 26))
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 11)
                         (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 40))
      (then (call $write (i32.const 300) (i32.const 12)))
      (else (call $write (i32.const 320) (i32.const 12))))
    (if (call $sock_accept (i32.const 3) (i32.const 0) (i32.const 44))
      (then (call $write (i32.const 340) (i32.const 14)))
      (else (call $write (i32.const 360) (i32.const 14))))))
