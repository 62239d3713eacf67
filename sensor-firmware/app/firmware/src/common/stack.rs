//! Stack high-water mark.
//!
//! cortex-m-rt's `paint-stack` feature makes the reset handler fill the
//! whole stack area, `_stack_end` (first free word above `.bss`/`.uninit`)
//! up to `_stack_start` (initial SP), with `0xCCCC_CCCC` before `main`.
//! The stack grows down from `_stack_start`; the words at the bottom still
//! holding the pattern were never used.

const PAINT: u32 = 0xCCCC_CCCC;

extern "C" {
    static _stack_start: u32;
    static _stack_end: u32;
}

/// Bytes of stack never used since boot (lowest free stack seen).
///
/// Scans upwards from `_stack_end` for the first word that is not the
/// paint pattern, stopping at the current stack pointer at the latest.
pub fn free_min() -> u32 {
    let bottom = core::ptr::addr_of!(_stack_end) as usize;
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let sp = cortex_m::register::msp::read() as usize;
    let limit = sp.clamp(bottom, top);
    let mut addr = bottom;
    while addr + 4 <= limit {
        // SAFETY: `addr` is 4-aligned (cortex-m-rt asserts `_stack_end % 4
        // == 0`) and within [_stack_end, SP), i.e. RAM reserved for the
        // stack by the linker script and not part of any Rust object; the
        // part below SP belongs to no live frame of this context. An
        // interrupt may concurrently push a frame there; a word read is
        // atomic on Cortex-M and any value is a valid u32, so the worst
        // outcome is a slightly smaller (still correct: that word was
        // used) free figure. Only raw-pointer volatile reads, no
        // references.
        let v = unsafe { core::ptr::read_volatile(addr as *const u32) };
        if v != PAINT {
            break;
        }
        addr += 4;
    }
    (addr - bottom) as u32
}
