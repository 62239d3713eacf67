//! Firmware for QEMU's `lm3s6965evb` (TI Stellaris LM3S6965, Cortex-M3).
//! Run it with `sensor-firmware/run-qemu.sh`.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

#[path = "../common/mod.rs"]
mod common;

#[path = "../board/qemu_lm3s6965.rs"]
mod board;

#[cortex_m_rt::entry]
fn main() -> ! {
    board::main()
}
