//! Firmware for the Nordic nRF52840 (Cortex-M4F), pins of the nRF52840-DK.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

#[path = "../common/mod.rs"]
mod common;

#[path = "../board/nrf52840.rs"]
mod board;

#[cortex_m_rt::entry]
fn main() -> ! {
    board::main()
}
