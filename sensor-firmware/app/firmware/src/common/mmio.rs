//! 32-bit memory-mapped registers.
//!
//! The only `unsafe` of a register access is in [`Reg::at`]: whoever names
//! an address promises (with a `// SAFETY:` comment citing the datasheet)
//! that it is a real register of the chip. Reads and writes are then
//! volatile 32-bit accesses, which is what the hardware expects.

/// One 32-bit MMIO register.
#[derive(Clone, Copy)]
pub struct Reg {
    addr: usize,
}

impl Reg {
    /// The register at `addr`.
    ///
    /// # Safety
    ///
    /// `addr` must be the 4-byte aligned address of a 32-bit memory-mapped
    /// register of the target chip (per its datasheet), for which volatile
    /// 32-bit reads and writes are defined at any time, and whose side
    /// effects (clearing flags, starting tasks…) the code using it intends.
    /// It must not alias memory that Rust code accesses as ordinary objects.
    pub const unsafe fn at(addr: usize) -> Self {
        Self { addr }
    }

    /// Volatile read.
    #[inline(always)]
    pub fn read(self) -> u32 {
        // SAFETY: `Reg::at`'s contract: a valid, aligned MMIO register.
        unsafe { core::ptr::read_volatile(self.addr as *const u32) }
    }

    /// Volatile write.
    #[inline(always)]
    pub fn write(self, value: u32) {
        // SAFETY: `Reg::at`'s contract: a valid, aligned MMIO register.
        unsafe { core::ptr::write_volatile(self.addr as *mut u32, value) }
    }

    /// Read-modify-write (not atomic: callers own the register or run in a
    /// critical section).
    #[inline(always)]
    #[allow(dead_code, reason = "not every board uses it")]
    pub fn modify(self, f: impl FnOnce(u32) -> u32) {
        self.write(f(self.read()));
    }
}
