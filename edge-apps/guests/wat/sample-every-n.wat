;; sample-every-n: a gatewayd edge app written by hand in WebAssembly text,
;; implementing the canonical ABI of the `gatewayd:edge/edge-app` world
;; (edge-apps/wit/edge.wit) without any bindings generator.
;;
;; Stream delivery: passes every N-th reading and drops the others. The
;; counter runs across calls and across devices (one stream): readings
;; 0, N, 2N, ... of the stream pass (the first one always does). N is the
;; config key "every" (a positive integer; default 10):
;;     [config]
;;     every = 5          -> init("{\"every\":5}")
;;
;; Build: gatewayd-componentize --wit ../wit sample-every-n.wat -o out.wasm
;; (the module has no component-type section; the tool embeds the world).
;;
;; ---------------------------------------------------------------------------
;; Canonical ABI layout (sizes / alignments in bytes; a record's fields are
;; laid out in order, each at the next multiple of its alignment; a
;; variant is its discriminant (u8 for < 256 cases) followed by the largest
;; case payload, at the payload's alignment).
;;
;;   string, list<T>      = (ptr: i32, len: i32)              size 8,  align 4
;;   option<string>       = u8 tag @0, string @4              size 12, align 4
;;   option<f64>          = u8 tag @0, f64 @8                 size 16, align 8
;;   value (variant)      = u8 tag @0, payload @8 (f64 / string / list)
;;                                                            size 16, align 8
;;   option<value>        = u8 tag @0, value @8               size 24, align 8
;;   measurement          = name @0, unit @8, value @24, sum @48
;;                                                            size 64, align 8
;;   metadata             = rssi @0, snr @16, battery @32, gateway-eui @48,
;;                          source @60, extra @72             size 80, align 8
;;   reading              = device @0, time-us (s64) @8, measurements @16,
;;                          meta @24                          size 104, align 8
;;   verdict (variant)    = u8 tag @0 (0 pass, 1 drop, 2 replace),
;;                          reading @8                        size 112, align 8
;;   alert                = device @0, time-us @8, severity (u8) @16,
;;                          code @20, message @28             size 40, align 8
;;   output               = verdicts @0, emit @8, alerts @16  size 24, align 4
;;   result<output, string> = u8 tag @0 (0 ok, 1 err), payload @4
;;                                                            size 28, align 4
;;   result<_, string>    = u8 tag @0, string @4              size 12, align 4
;;
;; Core signatures (more than one flat result -> returned through memory):
;;   init(config: string) -> result<_, string>
;;       (func (param ptr i32) (param len i32) (result i32 ;; -> 12-byte area))
;;   process(readings: list<reading>, window: option<window>)
;;           -> result<output, string>
;;       list -> (ptr, len); option<window> -> (tag i32, start i64, end i64)
;;       (func (param i32 i32 i32 i64 i64) (result i32 ;; -> 28-byte area))
;;
;; Memory map:
;;   16..44    process return area (result<output, string>)
;;   48..60    init return area (result<_, string>)
;;   64..      constant strings
;;   1024..    bump heap: the host's argument copies (via cabi_realloc) and
;;             the verdict list. Reset by the post-return functions, when
;;             everything of the finished call is dead.
;; ---------------------------------------------------------------------------
(module
  (memory (export "memory") 1)

  (global $HEAP_BASE i32 (i32.const 1024))
  (global $heap (mut i32) (i32.const 1024))
  ;; N, and how many readings since the last one that passed (0 = next passes).
  (global $n (mut i32) (i32.const 10))
  (global $phase (mut i32) (i32.const 0))

  (data (i32.const 64) "\22every\22")                          ;; 64..71, 7 bytes
  (data (i32.const 80) "`every` must be a positive integer")  ;; 80..114, 34 bytes

  ;; cabi_realloc(old_ptr, old_size, align, new_size) -> ptr: a bump
  ;; allocator. Frees nothing; memory grows as needed (the host's memory
  ;; limit applies) and failure traps.
  (func $cabi_realloc (export "cabi_realloc")
    (param $old i32) (param $old_size i32) (param $align i32) (param $size i32)
    (result i32)
    (local $ptr i32) (local $end i32) (local $have i32)
    ;; ptr = (heap + align - 1) & -align
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    ;; Address-space overflow.
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then unreachable))
    ;; Grow by ceil((end - have) / 64 KiB) pages if needed.
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u
                  (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 0xffff))
                  (i32.const 16)))
              (i32.const -1))
          (then unreachable))))
    ;; A realloc copies the old contents (the smaller of the two sizes).
    (if (local.get $old)
      (then
        (memory.copy (local.get $ptr) (local.get $old)
          (select (local.get $old_size) (local.get $size)
            (i32.lt_u (local.get $old_size) (local.get $size))))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  (func $is_ws (param $c i32) (result i32)
    (i32.or
      (i32.or (i32.eq (local.get $c) (i32.const 0x20)) (i32.eq (local.get $c) (i32.const 0x09)))
      (i32.or (i32.eq (local.get $c) (i32.const 0x0a)) (i32.eq (local.get $c) (i32.const 0x0d)))))

  ;; Does the 7-byte key at address 64 start at $p?
  (func $key_at (param $p i32) (result i32)
    (local $k i32)
    (block $no
      (loop $cmp
        (br_if $no
          (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $k)))
                  (i32.load8_u (i32.add (i32.const 64) (local.get $k)))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br_if $cmp (i32.lt_u (local.get $k) (i32.const 7))))
      (return (i32.const 1)))
    (i32.const 0))

  ;; init(config: string) -> result<_, string>
  ;; Finds the first `"every"` followed by `:` and reads the digits after it.
  (func (export "init") (param $ptr i32) (param $len i32) (result i32)
    (local $i i32) (local $end i32) (local $c i32) (local $v i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $v (i32.const 10))
    (block $parsed
      (block $bad
        (local.set $i (local.get $ptr))
        (loop $search
          ;; Not found (fewer than 7 bytes left): keep the default.
          (br_if $parsed (i32.gt_u (i32.add (local.get $i) (i32.const 7)) (local.get $end)))
          (if (call $key_at (local.get $i))
            (then
              (local.set $c (i32.add (local.get $i) (i32.const 7)))
              ;; Skip whitespace, then expect ':'.
              (block $ws_done
                (loop $ws
                  (br_if $ws_done (i32.ge_u (local.get $c) (local.get $end)))
                  (br_if $ws_done (i32.eqz (call $is_ws (i32.load8_u (local.get $c)))))
                  (local.set $c (i32.add (local.get $c) (i32.const 1)))
                  (br $ws)))
              (if (i32.and
                    (i32.lt_u (local.get $c) (local.get $end))
                    (i32.eq (i32.load8_u (local.get $c)) (i32.const 0x3a)))
                (then
                  (local.set $c (i32.add (local.get $c) (i32.const 1)))
                  (block $ws2_done
                    (loop $ws2
                      (br_if $ws2_done (i32.ge_u (local.get $c) (local.get $end)))
                      (br_if $ws2_done (i32.eqz (call $is_ws (i32.load8_u (local.get $c)))))
                      (local.set $c (i32.add (local.get $c) (i32.const 1)))
                      (br $ws2)))
                  ;; At least one digit; stop at the first non-digit (so 5.0 is 5).
                  (local.set $v (i32.const 0))
                  (br_if $bad (i32.ge_u (local.get $c) (local.get $end)))
                  (br_if $bad (i32.gt_u
                    (i32.sub (i32.load8_u (local.get $c)) (i32.const 0x30)) (i32.const 9)))
                  (block $digits_done
                    (loop $digits
                      (br_if $digits_done (i32.ge_u (local.get $c) (local.get $end)))
                      (br_if $digits_done (i32.gt_u
                        (i32.sub (i32.load8_u (local.get $c)) (i32.const 0x30)) (i32.const 9)))
                      ;; Cap before multiplying: no i32 overflow.
                      (br_if $bad (i32.gt_u (local.get $v) (i32.const 100000000)))
                      (local.set $v
                        (i32.add (i32.mul (local.get $v) (i32.const 10))
                                 (i32.sub (i32.load8_u (local.get $c)) (i32.const 0x30))))
                      (local.set $c (i32.add (local.get $c) (i32.const 1)))
                      (br $digits)))
                  (br_if $bad (i32.eqz (local.get $v)))
                  (br $parsed)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $search)))
      ;; $bad: err("`every` must be a positive integer")
      (i32.store8 (i32.const 48) (i32.const 1))
      (i32.store (i32.const 52) (i32.const 80))
      (i32.store (i32.const 56) (i32.const 34))
      (return (i32.const 48)))
    ;; $parsed: ok
    (global.set $n (local.get $v))
    (global.set $phase (i32.const 0))
    (i32.store8 (i32.const 48) (i32.const 0))
    (i32.const 48))

  ;; process(readings: list<reading>, window: option<window>)
  ;;   -> result<output, string>
  ;; Only the list length is used: one verdict per reading.
  (func (export "process")
    (param $readings i32) (param $len i32)
    (param $has_window i32) (param $start i64) (param $end i64)
    (result i32)
    (local $verdicts i32) (local $i i32) (local $p i32)
    ;; Guard the size computation below against i32 overflow (16 Mi readings
    ;; of 104 bytes could not be in a 4 GiB memory anyway).
    (if (i32.gt_u (local.get $len) (i32.const 0x01000000)) (then unreachable))
    ;; list<verdict>: len * 112 bytes, 8-aligned.
    (local.set $verdicts
      (call $cabi_realloc (i32.const 0) (i32.const 0) (i32.const 8)
        (i32.mul (local.get $len) (i32.const 112))))
    (local.set $p (local.get $verdicts))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        ;; Tag: 0 pass when the phase is 0, else 1 drop. Pass/drop carry no
        ;; payload, so the other 111 bytes are never read.
        (i32.store8 (local.get $p) (i32.ne (global.get $phase) (i32.const 0)))
        (global.set $phase (i32.add (global.get $phase) (i32.const 1)))
        (if (i32.ge_u (global.get $phase) (global.get $n))
          (then (global.set $phase (i32.const 0))))
        (local.set $p (i32.add (local.get $p) (i32.const 112)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    ;; ok(output { verdicts, emit: [], alerts: [] }) at 16. Empty lists still
    ;; need an aligned pointer: 0 is.
    (i32.store8 (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (local.get $verdicts))
    (i32.store (i32.const 24) (local.get $len))
    (i32.store (i32.const 28) (i32.const 0))
    (i32.store (i32.const 32) (i32.const 0))
    (i32.store (i32.const 36) (i32.const 0))
    (i32.store (i32.const 40) (i32.const 0))
    (i32.const 16))

  ;; Post-return: the host has read the result; free the whole heap.
  (func (export "cabi_post_init") (param i32)
    (global.set $heap (global.get $HEAP_BASE)))
  (func (export "cabi_post_process") (param i32)
    (global.set $heap (global.get $HEAP_BASE)))
)
