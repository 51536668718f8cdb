;; Answers the FNV-1a (32-bit) checksum of the request body as "fnv1a32 xxxxxxxx\n": the
;; derived object an upload trigger writes beside each upload.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 34 bytes of header and label; the eight hex digits follow at 98, a newline at 106.
  (data (i32.const 64) "Content-Type: text/plain\n\nfnv1a32 ")
  (data (i32.const 128) "0123456789abcdef")
  (func (export "_start") (local $n i32) (local $i i32) (local $h i32)
    (local.set $h (i32.const 0x811c9dc5))
    (block $done
      (loop $more
        (i32.store (i32.const 16) (i32.const 1024))
        (i32.store (i32.const 20) (i32.const 65536))
        (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (local.set $n (i32.load (i32.const 24)))
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $i (i32.const 0))
        (block $end
          (loop $byte
            (br_if $end (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $h
              (i32.mul
                (i32.xor (local.get $h) (i32.load8_u offset=1024 (local.get $i)))
                (i32.const 0x01000193)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $byte)))
        (br $more)))
    (local.set $i (i32.const 0))
    (block $end
      (loop $digit
        (br_if $end (i32.eq (local.get $i) (i32.const 8)))
        (i32.store8 offset=98 (local.get $i)
          (i32.load8_u offset=128
            (i32.and
              (i32.shr_u (local.get $h)
                (i32.sub (i32.const 28) (i32.shl (local.get $i) (i32.const 2))))
              (i32.const 15))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $digit)))
    (i32.store8 (i32.const 106) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 43))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
