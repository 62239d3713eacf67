//! The reset record: 16 bytes of RAM that nothing initialises, so they
//! survive a system reset (SYSRESETREQ, watchdog) but not a power cycle.
//!
//! Where: `_reset_record`, 16 bytes just above the linker's RAM region
//! (each board's `memory.x`). Not cortex-m-rt's `.uninit` section: lld puts
//! `.uninit` in the same PT_LOAD segment as `.bss` (file size 0, memory
//! size > 0), and QEMU's ELF loader re-applies its load segments (zero
//! filling that part) on each system reset, which would wipe the record. Outside all
//! sections and segments, neither the startup code nor QEMU touches it
//! (verified under QEMU 7.2, see sensor-firmware/README.md).
//!
//! Layout: `magic`, `reason` code, `watchdog_resets`, `check` (=
//! `magic ^ reason ^ watchdog_resets ^ CHECK_XOR`). A record whose magic or
//! check is wrong (power-on: RAM is random, or QEMU's zeroed RAM) means a
//! cold start.
//!
//! Protocol: at boot [`take`] reads the record and re-arms it with
//! [`Code::Armed`]; whoever resets on purpose first writes its reason
//! ([`record`]): the Reboot command (`Software`), the watchdog's early
//! warning interrupt (`Watchdog`), the panic and HardFault handlers
//! (`Panic`, `Fault`). A reset that finds `Armed` was not announced
//! (reset pin, debugger, QEMU `system_reset`): `Unknown` unless the
//! hardware reset-cause register says more.

use gatewayd_sensor_proto::msg::ResetReason;

const MAGIC: u32 = 0x5E45_0B07;
const CHECK_XOR: u32 = 0xA5A5_5A5A;

/// Recorded reset causes.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    /// Booted; no reset announced since.
    Armed = 1,
    /// `Reboot` command.
    Software = 2,
    /// Watchdog early-warning interrupt (the reset follows).
    Watchdog = 3,
    /// Panic handler.
    Panic = 4,
    /// HardFault handler.
    Fault = 5,
}

const WORDS: usize = 4;

extern "C" {
    /// Defined by memory.x: 16 bytes of RAM outside the linker's region.
    static mut _reset_record: [u32; WORDS];
}

fn word(i: usize) -> *mut u32 {
    // Only a raw pointer is formed (no reference); `i` is clamped below
    // WORDS, so it stays inside the 16 reserved bytes.
    // (Taking the address of an extern static reads nothing: safe.)
    let base = core::ptr::addr_of_mut!(_reset_record);
    base.cast::<u32>().wrapping_add(i.min(WORDS - 1))
}

fn read_word(i: usize) -> u32 {
    // SAFETY: `word(i)` points into `_reset_record`, 16 4-aligned bytes of
    // RAM reserved by memory.x (no Rust object, stack or section overlaps
    // them) that only this module touches, always through volatile raw-pointer
    // accesses (never references). Any bit pattern is a valid u32, so
    // reading never-initialised RAM is fine here (volatile reads of
    // uninitialised memory through a raw pointer: the value is whatever
    // the RAM holds, which is the point). Single core: a concurrent
    // writer is an interrupt that resets the chip right after; a torn
    // record fails the check word.
    unsafe { core::ptr::read_volatile(word(i)) }
}

fn write_word(i: usize, v: u32) {
    // SAFETY: as in `read_word`: in-bounds, aligned, exclusively accessed
    // by this module with volatile raw-pointer writes.
    unsafe { core::ptr::write_volatile(word(i), v) }
}

fn store(code: Code, watchdog_resets: u16) {
    let (c, w) = (code as u32, u32::from(watchdog_resets));
    write_word(0, 0); // invalid while being written
    write_word(1, c);
    write_word(2, w);
    write_word(3, MAGIC ^ c ^ w ^ CHECK_XOR);
    write_word(0, MAGIC);
}

/// Reads the record as left by the previous run.
fn load() -> Option<(Code, u16)> {
    let (m, c, w, k) = (read_word(0), read_word(1), read_word(2), read_word(3));
    if m != MAGIC || k != m ^ c ^ w ^ CHECK_XOR {
        return None;
    }
    let code = match c {
        1 => Code::Armed,
        2 => Code::Software,
        3 => Code::Watchdog,
        4 => Code::Panic,
        5 => Code::Fault,
        _ => return None,
    };
    Some((code, u16::try_from(w).unwrap_or(u16::MAX)))
}

/// Announces a deliberate reset (keeps the watchdog count).
pub fn record(code: Code) {
    let w = load().map_or(0, |(_, w)| w);
    store(code, w);
}

/// At boot: why did we reset, and how many watchdog resets so far?
///
/// `hardware`: the chip's reset-cause register decoded, if it says
/// anything (`None` when it is empty or not implemented, as in QEMU). It
/// wins over the record, except that a hardware "software reset" that the
/// record attributes to a panic or fault is reported `Unknown`.
pub fn take(hardware: Option<ResetReason>) -> (ResetReason, u16) {
    let rec = load();
    let recorded = match rec {
        None => ResetReason::PowerOn,
        Some((Code::Armed, _)) => ResetReason::Unknown,
        Some((Code::Software, _)) => ResetReason::Software,
        Some((Code::Watchdog, _)) => ResetReason::Watchdog,
        Some((Code::Panic | Code::Fault, _)) => ResetReason::Unknown,
    };
    let mut wd = rec.map_or(0, |(_, w)| w);
    let reason = match hardware {
        Some(ResetReason::Software) if recorded == ResetReason::Unknown => ResetReason::Unknown,
        Some(hw) => hw,
        None => recorded,
    };
    if reason == ResetReason::Watchdog {
        wd = wd.saturating_add(1);
    }
    store(Code::Armed, wd);
    (reason, wd)
}
