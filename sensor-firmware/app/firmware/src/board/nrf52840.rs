//! Board layer for the Nordic nRF52840 (Cortex-M4F), pins of the
//! nRF52840-DK (PCA10056). Builds; not run in CI (no hardware, no QEMU
//! model).
//!
//! Register addresses and values: nRF52840 Product Specification v1.7
//! ("PS"), section numbers below.
//!
//! * UART0 at 0x4000_2000, used as the legacy (non-DMA) UART (PS 6.33,
//!   "UART — Universal asynchronous receiver/transmitter", deprecated but
//!   present; same base and IRQ as UARTE0): 115200 8N1, TX P0.06, RX
//!   P0.08, RXDRDY interrupt (IRQ 2) into a bounded queue, TX by polling
//!   TXDRDY. Byte-wise and without EasyDMA, so no RAM buffer ownership to
//!   get wrong.
//! * Uptime: RTC1 (PS 6.22) on the 32.768 kHz LFCLK (internal RC; the DK
//!   also has a crystal): 24-bit counter, overflows counted in its
//!   interrupt (IRQ 17), COMPARE0 re-armed every 32 ticks (~1 ms) to wake
//!   the main loop. SysTick is not used: it stops when the CPU sleeps with
//!   HFCLK off.
//! * Watchdog: WDT (PS 6.36), 2 s, keeps running while the CPU sleeps;
//!   its TIMEOUT interrupt (IRQ 16) records `Watchdog` in the noinit record;
//!   the reset follows two 32.768 kHz cycles later.
//! * Sensors: the on-die TEMP sensor (PS 6.27, 0.25 °C units); no humidity
//!   sensor on the DK (`None`); no battery measurement (`None`).
//! * Reset reason: POWER.RESETREAS (PS 5.3.7.11), cleared after reading.
//! * Device id: FICR.DEVICEID[0..2] (PS 4.4.2.1) → `nrf52-<16 hex digits>`.
//! * LED: LED1 of the DK on P0.13, active low.

use core::cell::Cell;

use cortex_m::interrupt::{InterruptNumber, Mutex};
use cortex_m::peripheral::NVIC;
use gatewayd_sensor_logic::{
    device_id_hex64, App, Clock, Health, Identity, Led, SensorSample, Sensors, SerialTx,
};
use gatewayd_sensor_proto::msg::ResetReason;
use gatewayd_sensor_proto::Str;

use crate::common::mmio::Reg;
use crate::common::noinit::{self, Code};
use crate::common::runtime::{self, System, Watchdog};
use crate::common::rx;
use crate::common::stack;

// --- CLOCK (PS 5.4.3, base 0x4000_0000) ---
const CLOCK: usize = 0x4000_0000;
// SAFETY: TASKS_LFCLKSTART, CLOCK + 0x008 (PS 5.4.3.2).
const CLOCK_TASKS_LFCLKSTART: Reg = unsafe { Reg::at(CLOCK + 0x008) };
// SAFETY: EVENTS_LFCLKSTARTED, CLOCK + 0x104.
const CLOCK_EVENTS_LFCLKSTARTED: Reg = unsafe { Reg::at(CLOCK + 0x104) };
// SAFETY: LFCLKSRC, CLOCK + 0x518; 0 = RC oscillator.
const CLOCK_LFCLKSRC: Reg = unsafe { Reg::at(CLOCK + 0x518) };

// --- POWER (PS 5.3.7, base 0x4000_0000) ---
// SAFETY: RESETREAS, POWER + 0x400 (PS 5.3.7.11); write 1s to clear.
const POWER_RESETREAS: Reg = unsafe { Reg::at(0x4000_0000 + 0x400) };
const RESETREAS_RESETPIN: u32 = 1 << 0;
const RESETREAS_DOG: u32 = 1 << 1;
const RESETREAS_SREQ: u32 = 1 << 2;
const RESETREAS_LOCKUP: u32 = 1 << 3;

// --- UART0 (PS 6.33.9, base 0x4000_2000) ---
const UART0: usize = 0x4000_2000;
// SAFETY: TASKS_STARTRX, UART0 + 0x000 (PS 6.33.9.1).
const UART_TASKS_STARTRX: Reg = unsafe { Reg::at(UART0 + 0x000) };
// SAFETY: TASKS_STARTTX, UART0 + 0x008.
const UART_TASKS_STARTTX: Reg = unsafe { Reg::at(UART0 + 0x008) };
// SAFETY: EVENTS_RXDRDY, UART0 + 0x108.
const UART_EVENTS_RXDRDY: Reg = unsafe { Reg::at(UART0 + 0x108) };
// SAFETY: EVENTS_TXDRDY, UART0 + 0x11C.
const UART_EVENTS_TXDRDY: Reg = unsafe { Reg::at(UART0 + 0x11C) };
// SAFETY: EVENTS_ERROR, UART0 + 0x124.
const UART_EVENTS_ERROR: Reg = unsafe { Reg::at(UART0 + 0x124) };
// SAFETY: INTENSET, UART0 + 0x304; bit 2 RXDRDY, bit 9 ERROR.
const UART_INTENSET: Reg = unsafe { Reg::at(UART0 + 0x304) };
// SAFETY: ERRORSRC, UART0 + 0x480; write 1s to clear.
const UART_ERRORSRC: Reg = unsafe { Reg::at(UART0 + 0x480) };
// SAFETY: ENABLE, UART0 + 0x500; 4 = UART.
const UART_ENABLE: Reg = unsafe { Reg::at(UART0 + 0x500) };
// SAFETY: PSEL.TXD, UART0 + 0x50C.
const UART_PSEL_TXD: Reg = unsafe { Reg::at(UART0 + 0x50C) };
// SAFETY: PSEL.RXD, UART0 + 0x514.
const UART_PSEL_RXD: Reg = unsafe { Reg::at(UART0 + 0x514) };
// SAFETY: RXD, UART0 + 0x518 (reading pops the RX FIFO).
const UART_RXD: Reg = unsafe { Reg::at(UART0 + 0x518) };
// SAFETY: TXD, UART0 + 0x51C.
const UART_TXD: Reg = unsafe { Reg::at(UART0 + 0x51C) };
// SAFETY: BAUDRATE, UART0 + 0x524.
const UART_BAUDRATE: Reg = unsafe { Reg::at(UART0 + 0x524) };
// SAFETY: CONFIG, UART0 + 0x56C; 0 = no parity, no flow control.
const UART_CONFIG: Reg = unsafe { Reg::at(UART0 + 0x56C) };
const UART_ENABLE_UART: u32 = 4;
const UART_BAUD_115200: u32 = 0x01D7_E000;
const UART_INT_RXDRDY: u32 = 1 << 2;
const UART_INT_ERROR: u32 = 1 << 9;
const PIN_TX: u32 = 6; // P0.06, DK VCOM TXD
const PIN_RX: u32 = 8; // P0.08, DK VCOM RXD
const PIN_LED1: u32 = 13; // P0.13, active low
/// UARTE0_UART0 interrupt (PS 4.2.4, instantiation table: ID 2).
const IRQ_UART0: u16 = 2;

// --- GPIO P0 (PS 6.9.2, base 0x5000_0000) ---
const P0: usize = 0x5000_0000;
// SAFETY: OUTSET, P0 + 0x508 (PS 6.9.2.2).
const P0_OUTSET: Reg = unsafe { Reg::at(P0 + 0x508) };
// SAFETY: OUTCLR, P0 + 0x50C.
const P0_OUTCLR: Reg = unsafe { Reg::at(P0 + 0x50C) };
// SAFETY: DIRSET, P0 + 0x518.
const P0_DIRSET: Reg = unsafe { Reg::at(P0 + 0x518) };

// --- RTC1 (PS 6.22.10, base 0x4001_1000) ---
const RTC1: usize = 0x4001_1000;
// SAFETY: TASKS_START, RTC1 + 0x000.
const RTC1_TASKS_START: Reg = unsafe { Reg::at(RTC1 + 0x000) };
// SAFETY: EVENTS_OVRFLW, RTC1 + 0x104.
const RTC1_EVENTS_OVRFLW: Reg = unsafe { Reg::at(RTC1 + 0x104) };
// SAFETY: EVENTS_COMPARE[0], RTC1 + 0x140.
const RTC1_EVENTS_COMPARE0: Reg = unsafe { Reg::at(RTC1 + 0x140) };
// SAFETY: INTENSET, RTC1 + 0x304; bit 1 OVRFLW, bit 16 COMPARE0.
const RTC1_INTENSET: Reg = unsafe { Reg::at(RTC1 + 0x304) };
// SAFETY: COUNTER, RTC1 + 0x504 (24 bits).
const RTC1_COUNTER: Reg = unsafe { Reg::at(RTC1 + 0x504) };
// SAFETY: PRESCALER, RTC1 + 0x508.
const RTC1_PRESCALER: Reg = unsafe { Reg::at(RTC1 + 0x508) };
// SAFETY: CC[0], RTC1 + 0x540.
const RTC1_CC0: Reg = unsafe { Reg::at(RTC1 + 0x540) };
const RTC_INT_OVRFLW: u32 = 1 << 1;
const RTC_INT_COMPARE0: u32 = 1 << 16;
const RTC_HZ: u64 = 32_768;
/// Wake-up period of the main loop, RTC ticks (~0.98 ms).
const RTC_WAKE_TICKS: u32 = 32;
/// RTC1 interrupt (PS 4.2.4: ID 17).
const IRQ_RTC1: u16 = 17;

// --- WDT (PS 6.36.6, base 0x4001_0000) ---
const WDT: usize = 0x4001_0000;
// SAFETY: TASKS_START, WDT + 0x000.
const WDT_TASKS_START: Reg = unsafe { Reg::at(WDT + 0x000) };
// SAFETY: INTENSET, WDT + 0x304; bit 0 TIMEOUT.
const WDT_INTENSET: Reg = unsafe { Reg::at(WDT + 0x304) };
// SAFETY: CRV, WDT + 0x504 (counter reload value, 32.768 kHz ticks).
const WDT_CRV: Reg = unsafe { Reg::at(WDT + 0x504) };
// SAFETY: RREN, WDT + 0x508 (reload request enables).
const WDT_RREN: Reg = unsafe { Reg::at(WDT + 0x508) };
// SAFETY: CONFIG, WDT + 0x50C; bit 0 SLEEP = run while sleeping.
const WDT_CONFIG: Reg = unsafe { Reg::at(WDT + 0x50C) };
// SAFETY: RR[0], WDT + 0x600; write 0x6E524635 to reload.
const WDT_RR0: Reg = unsafe { Reg::at(WDT + 0x600) };
const WDT_RELOAD: u32 = 0x6E52_4635;
/// WDT interrupt (PS 4.2.4: ID 16).
const IRQ_WDT: u16 = 16;

// --- TEMP (PS 6.27.4, base 0x4000_C000) ---
const TEMP: usize = 0x4000_C000;
// SAFETY: TASKS_START, TEMP + 0x000.
const TEMP_TASKS_START: Reg = unsafe { Reg::at(TEMP + 0x000) };
// SAFETY: TASKS_STOP, TEMP + 0x004.
const TEMP_TASKS_STOP: Reg = unsafe { Reg::at(TEMP + 0x004) };
// SAFETY: EVENTS_DATARDY, TEMP + 0x100.
const TEMP_EVENTS_DATARDY: Reg = unsafe { Reg::at(TEMP + 0x100) };
// SAFETY: TEMP, TEMP + 0x508 (signed, 0.25 °C).
const TEMP_TEMP: Reg = unsafe { Reg::at(TEMP + 0x508) };

// --- FICR (PS 4.4, base 0x1000_0000) ---
// SAFETY: DEVICEID[0], FICR + 0x060 (PS 4.4.2.1), read-only.
const FICR_DEVICEID0: Reg = unsafe { Reg::at(0x1000_0060) };
// SAFETY: DEVICEID[1], FICR + 0x064, read-only.
const FICR_DEVICEID1: Reg = unsafe { Reg::at(0x1000_0064) };

static RTC_OVERFLOWS: Mutex<Cell<u32>> = Mutex::new(Cell::new(0));

#[derive(Clone, Copy)]
struct Irq(u16);

// SAFETY: `number` returns IRQ numbers that exist on the nRF52840 (PS
// 4.2.4, instantiation table), as `InterruptNumber` requires.
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

extern "C" {
    /// cortex-m-rt's default handler (link.x `PROVIDE`s it).
    fn DefaultHandler();
}

/// The device-specific vectors (48 IRQs on the nRF52840).
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
#[used]
pub static __INTERRUPTS: [unsafe extern "C" fn(); 48] = {
    let mut v = [DefaultHandler as unsafe extern "C" fn(); 48];
    v[IRQ_UART0 as usize] = uart0_isr;
    v[IRQ_WDT as usize] = wdt_isr;
    v[IRQ_RTC1 as usize] = rtc1_isr;
    v
};

extern "C" fn uart0_isr() {
    if UART_EVENTS_ERROR.read() != 0 {
        UART_EVENTS_ERROR.write(0);
        UART_ERRORSRC.write(UART_ERRORSRC.read());
    }
    // The RX FIFO holds up to 6 bytes; each read of RXD pops one.
    rx::push_from_isr(|| {
        if UART_EVENTS_RXDRDY.read() == 0 {
            return None;
        }
        UART_EVENTS_RXDRDY.write(0);
        Some(UART_RXD.read() as u8)
    });
}

/// TIMEOUT: the reset follows two 32.768 kHz cycles later; record why.
extern "C" fn wdt_isr() {
    noinit::record(Code::Watchdog);
    loop {
        cortex_m::asm::nop();
    }
}

extern "C" fn rtc1_isr() {
    cortex_m::interrupt::free(|cs| {
        if RTC1_EVENTS_OVRFLW.read() != 0 {
            RTC1_EVENTS_OVRFLW.write(0);
            let o = RTC_OVERFLOWS.borrow(cs);
            o.set(o.get().wrapping_add(1));
        }
    });
    if RTC1_EVENTS_COMPARE0.read() != 0 {
        RTC1_EVENTS_COMPARE0.write(0);
        RTC1_CC0.write(RTC1_COUNTER.read().wrapping_add(RTC_WAKE_TICKS) & 0x00FF_FFFF);
    }
}

struct Nrf52840;

impl Clock for Nrf52840 {
    fn now_ms(&self) -> u64 {
        let ticks = cortex_m::interrupt::free(|cs| {
            let mut ovf = RTC_OVERFLOWS.borrow(cs).get();
            let counter = RTC1_COUNTER.read() & 0x00FF_FFFF;
            // An overflow not yet counted by the (masked) interrupt.
            if RTC1_EVENTS_OVRFLW.read() != 0 && counter < 0x0080_0000 {
                ovf = ovf.wrapping_add(1);
            }
            (u64::from(ovf) << 24) | u64::from(counter)
        });
        ticks * 1000 / RTC_HZ
    }
}

impl SerialTx for Nrf52840 {
    fn write_all(&mut self, bytes: &[u8]) {
        for &b in bytes {
            UART_EVENTS_TXDRDY.write(0);
            UART_TXD.write(u32::from(b));
            while UART_EVENTS_TXDRDY.read() == 0 {}
        }
    }
}

impl Sensors for Nrf52840 {
    fn sample(&mut self, _now_ms: u64) -> SensorSample {
        TEMP_EVENTS_DATARDY.write(0);
        TEMP_TASKS_START.write(1);
        // A conversion takes 36 µs (PS 6.27.5); give up after ~1 ms.
        let mut spins = 0u32;
        while TEMP_EVENTS_DATARDY.read() == 0 && spins < 64_000 {
            spins += 1;
        }
        let ready = TEMP_EVENTS_DATARDY.read() != 0;
        let raw = TEMP_TEMP.read() as i32;
        TEMP_EVENTS_DATARDY.write(0);
        TEMP_TASKS_STOP.write(1);
        SensorSample {
            temperature_c: ready.then(|| raw as f32 * 0.25),
            humidity_rh: None,
        }
    }
}

impl Led for Nrf52840 {
    fn set_led(&mut self, on: bool) {
        if on {
            P0_OUTCLR.write(1 << PIN_LED1);
        } else {
            P0_OUTSET.write(1 << PIN_LED1);
        }
    }
}

impl Health for Nrf52840 {
    fn stack_free_min(&mut self) -> u32 {
        stack::free_min()
    }
    fn battery_mv(&mut self) -> Option<u16> {
        None
    }
}

impl Watchdog for Nrf52840 {
    fn feed(&mut self) {
        if cfg!(feature = "wdt-test") && self.now_ms() > 5_000 {
            return;
        }
        WDT_RR0.write(WDT_RELOAD);
    }
}

impl System for Nrf52840 {
    fn drain_tx(&mut self) {
        // write_all returns after TXDRDY of the last byte: it has left TXD;
        // allow one more character time (87 µs at 115200) at 64 MHz.
        for _ in 0..6_000 {
            cortex_m::asm::nop();
        }
    }
}

fn hardware_reset_reason() -> Option<ResetReason> {
    let r = POWER_RESETREAS.read();
    POWER_RESETREAS.write(r);
    Some(if r & RESETREAS_DOG != 0 {
        ResetReason::Watchdog
    } else if r & RESETREAS_LOCKUP != 0 {
        ResetReason::Lockup
    } else if r & RESETREAS_SREQ != 0 {
        ResetReason::Software
    } else if r & RESETREAS_RESETPIN != 0 {
        ResetReason::Pin
    } else if r == 0 {
        ResetReason::PowerOn // no bit: power-on or brown-out reset (PS 5.3.7.11)
    } else {
        ResetReason::Unknown // wake from System OFF, debug interface…
    })
}

pub fn main() -> ! {
    let (reset_reason, watchdog_resets) = noinit::take(hardware_reset_reason());

    // LFCLK from the internal RC oscillator, for RTC1 and the WDT.
    CLOCK_LFCLKSRC.write(0);
    CLOCK_EVENTS_LFCLKSTARTED.write(0);
    CLOCK_TASKS_LFCLKSTART.write(1);
    while CLOCK_EVENTS_LFCLKSTARTED.read() == 0 {}

    // GPIO: TX idles high, LED1 off (high).
    P0_OUTSET.write((1 << PIN_TX) | (1 << PIN_LED1));
    P0_DIRSET.write((1 << PIN_TX) | (1 << PIN_LED1));

    // UART0, legacy mode.
    UART_PSEL_TXD.write(PIN_TX);
    UART_PSEL_RXD.write(PIN_RX);
    UART_BAUDRATE.write(UART_BAUD_115200);
    UART_CONFIG.write(0);
    UART_ENABLE.write(UART_ENABLE_UART);
    UART_INTENSET.write(UART_INT_RXDRDY | UART_INT_ERROR);
    UART_TASKS_STARTTX.write(1);
    UART_TASKS_STARTRX.write(1);

    // RTC1: 32.768 kHz, overflow + ~1 ms compare wake-up.
    RTC1_PRESCALER.write(0);
    RTC1_CC0.write(RTC_WAKE_TICKS);
    RTC1_INTENSET.write(RTC_INT_OVRFLW | RTC_INT_COMPARE0);
    RTC1_TASKS_START.write(1);

    // WDT: 2 s, running during sleep, reloaded through RR[0]. Once
    // started it cannot be stopped or reconfigured until reset.
    WDT_CONFIG.write(1);
    WDT_CRV.write(2 * 32_768 - 1);
    WDT_RREN.write(1);
    WDT_INTENSET.write(1);
    WDT_TASKS_START.write(1);

    // SAFETY: this firmware uses no NVIC-mask based critical sections
    // (only PRIMASK via `interrupt::free`); handlers and their statics are
    // ready.
    unsafe {
        NVIC::unmask(Irq(IRQ_UART0));
        NVIC::unmask(Irq(IRQ_RTC1));
        NVIC::unmask(Irq(IRQ_WDT));
    }
    // (The FPU: cortex-m-rt's reset handler enables it for eabihf targets.)

    let id = (u64::from(FICR_DEVICEID1.read()) << 32) | u64::from(FICR_DEVICEID0.read());
    let identity = Identity {
        device_id: device_id_hex64("nrf52-", id),
        firmware: Str::new(env!("CARGO_PKG_VERSION")).unwrap_or_default(),
        reset_reason,
        watchdog_resets,
    };
    let mut board = Nrf52840;
    let mut app = App::new(identity);
    runtime::run(&mut board, &mut app)
}
