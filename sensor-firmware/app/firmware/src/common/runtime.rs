//! The main loop and the board services it needs beyond
//! [`gatewayd_sensor_logic::Board`].

use cortex_m_rt::{exception, ExceptionFrame};
use gatewayd_sensor_logic::{App, Board, Request};

use super::noinit::{self, Code};
use super::rx;

/// The hardware watchdog.
pub trait Watchdog {
    /// Restarts the watchdog countdown.
    fn feed(&mut self);
}

/// Resetting the chip.
pub trait System {
    /// Waits until every byte written to the UART has left the wire.
    fn drain_tx(&mut self);
    /// Records `code` in the noinit record and resets the chip.
    fn reset(&mut self, code: Code) -> ! {
        self.drain_tx();
        noinit::record(code);
        cortex_m::peripheral::SCB::sys_reset()
    }
}

/// Bytes handled per loop pass before the timers get a turn.
const RX_BURST: usize = 64;

/// Runs the application forever: boot messages, then receive, poll the
/// timers, feed the watchdog, sleep until the next interrupt.
pub fn run<B: Board + Watchdog + System>(board: &mut B, app: &mut App) -> ! {
    app.start(board);
    loop {
        board.feed();
        for _ in 0..RX_BURST {
            let Some(byte) = rx::read_byte() else { break };
            if let Some(Request::Reboot) = app.on_rx_byte(byte, board) {
                board.reset(Code::Software);
            }
        }
        app.poll(board);
        // Sleep unless a byte arrived meanwhile. Interrupts are masked
        // around the check and WFI, so one arriving in between is not
        // lost: a pending interrupt wakes WFI even while masked and runs
        // as soon as the critical section ends. SysTick (1 kHz) and the
        // UART RX interrupt wake the loop.
        cortex_m::interrupt::free(|_| {
            if !rx::pending() {
                cortex_m::asm::wfi();
            }
        });
    }
}

/// A panic (none is reachable from received bytes; this is the backstop):
/// record it and reset rather than hang. `panic = "abort"` in the profile;
/// the message is not kept (no heap, no console).
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    cortex_m::interrupt::disable();
    noinit::record(Code::Panic);
    cortex_m::peripheral::SCB::sys_reset()
}

/// HardFault: record it and reset.
#[exception]
unsafe fn HardFault(_frame: &ExceptionFrame) -> ! {
    noinit::record(Code::Fault);
    cortex_m::peripheral::SCB::sys_reset()
}
