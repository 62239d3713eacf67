//! The UART receive queue between a board's RX interrupt and the main
//! loop: one static, bounded queue of 256 bytes (no heap). A byte that
//! finds it full is dropped; the frame it belonged to then fails its CRC
//! and the decoder counts it (`Diagnostics.frames_rx_errors`).

use core::cell::RefCell;

use cortex_m::interrupt::Mutex;
use heapless::Deque;

/// Bytes received and not yet handled by the main loop.
static RX: Mutex<RefCell<Deque<u8, 256>>> = Mutex::new(RefCell::new(Deque::new()));

/// For the RX interrupt handler: queues every byte `next` yields (the
/// board's "read the data register while the FIFO is not empty").
pub fn push_from_isr(mut next: impl FnMut() -> Option<u8>) {
    cortex_m::interrupt::free(|cs| {
        let Ok(mut q) = RX.borrow(cs).try_borrow_mut() else {
            return;
        };
        while let Some(byte) = next() {
            // Full: dropped (see the module docs).
            let _ = q.push_back(byte);
        }
    });
}

/// The next received byte, if any.
pub fn read_byte() -> Option<u8> {
    cortex_m::interrupt::free(|cs| RX.borrow(cs).try_borrow_mut().ok()?.pop_front())
}

/// Whether a byte is waiting (the main loop checks it with interrupts
/// masked before sleeping).
pub fn pending() -> bool {
    cortex_m::interrupt::free(|cs| RX.borrow(cs).try_borrow().is_ok_and(|q| !q.is_empty()))
}
