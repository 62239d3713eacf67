//! Board-independent firmware runtime: MMIO access, the noinit reset
//! record, the UART receive queue, stack measurement, the main loop, panic and fault handling.
//! Each binary (`src/bin/<board>.rs`) includes this module and one board
//! module, so every handler symbol lives in the binary crate itself.

pub mod mmio;
pub mod noinit;
pub mod runtime;
pub mod rx;
pub mod stack;
