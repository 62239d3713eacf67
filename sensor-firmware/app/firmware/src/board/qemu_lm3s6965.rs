//! Board layer for QEMU's `lm3s6965evb` machine (TI Stellaris LM3S6965,
//! Cortex-M3), QEMU 7.2.
//!
//! Register addresses: LM3S6965 datasheet (Texas Instruments
//! DS-LM3S6965-15553.2743, "Stellaris LM3S6965 Microcontroller Data Sheet";
//! chapter numbers below refer to it) and QEMU's `hw/arm/stellaris.c`.
//!
//! * UART0 (PL011 "luminary" variant), RX interrupt (IRQ 5) into a bounded
//!   queue; TX by blocking writes into the FIFO from the main loop.
//! * SysTick on the core clock for uptime. QEMU runs the core at
//!   [`SYSCLK_HZ`] = 12.5 MHz out of reset (RCC reset value 0x078E_3AC0:
//!   SYSDIV = 15, clock period = 5 ns × (SYSDIV + 1) = 80 ns in QEMU's
//!   model); measured: see sensor-firmware/README.md.
//! * Watchdog 0 (QEMU: CMSDK APB watchdog, luminary variant): 2 s
//!   timeout; the first timeout raises IRQ 18, whose handler records
//!   `Watchdog` in the noinit record and waits for the second, which
//!   resets the system.
//! * Sensors: **simulated** ([`gatewayd_sensor_logic::sim`]); there is no
//!   sensor on this board.
//! * LED: the EVB's status LED on PF0 (QEMU models the GPIO, shows nothing).
//! * Reset reason: SYSCTL RESC if it reports anything (real silicon);
//!   QEMU implements RESC as a plain register that no reset sets, so under
//!   QEMU the noinit record decides.

use core::cell::Cell;

use cortex_m::interrupt::{InterruptNumber, Mutex};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::NVIC;
use cortex_m_rt::exception;
use gatewayd_sensor_logic::sim::SimSensors;
use gatewayd_sensor_logic::{
    device_id_hex, App, Clock, Health, Identity, Led, SensorSample, Sensors, SerialTx,
};
use gatewayd_sensor_proto::msg::ResetReason;
use gatewayd_sensor_proto::Str;

use crate::common::mmio::Reg;
use crate::common::noinit::{self, Code};
use crate::common::runtime::{self, System, Watchdog};
use crate::common::rx;
use crate::common::stack;

/// Core clock under QEMU out of reset (see the module docs).
const SYSCLK_HZ: u32 = 12_500_000;
/// Watchdog timeout (each of the two stages).
const WDT_TIMEOUT_TICKS: u32 = 2 * SYSCLK_HZ;

// --- System control (datasheet ch. 6, base 0x400F_E000) ---
const SYSCTL: usize = 0x400F_E000;
// SAFETY: RESC, reset cause register, SYSCTL + 0x05C (datasheet 6.4, "RESC").
const SYSCTL_RESC: Reg = unsafe { Reg::at(SYSCTL + 0x05C) };
// SAFETY: RCGC0, run-mode clock gating 0, SYSCTL + 0x100 (datasheet 6.4); bit 3 = WDT.
const SYSCTL_RCGC0: Reg = unsafe { Reg::at(SYSCTL + 0x100) };
// SAFETY: RCGC1, run-mode clock gating 1, SYSCTL + 0x104; bit 0 = UART0.
const SYSCTL_RCGC1: Reg = unsafe { Reg::at(SYSCTL + 0x104) };
// SAFETY: RCGC2, run-mode clock gating 2, SYSCTL + 0x108; bit 5 = GPIO F.
const SYSCTL_RCGC2: Reg = unsafe { Reg::at(SYSCTL + 0x108) };
const RCGC0_WDT: u32 = 1 << 3;
const RCGC1_UART0: u32 = 1 << 0;
const RCGC2_GPIOF: u32 = 1 << 5;
// RESC bits (datasheet 6.4, "RESC"): EXT 0, POR 1, BOR 2, WDT 3, SW 4, LDO 5.
const RESC_EXT: u32 = 1 << 0;
const RESC_POR: u32 = 1 << 1;
const RESC_BOR: u32 = 1 << 2;
const RESC_WDT: u32 = 1 << 3;
const RESC_SW: u32 = 1 << 4;

// --- UART0 (datasheet ch. 12, base 0x4000_C000) ---
const UART0: usize = 0x4000_C000;
// SAFETY: UARTDR, data, UART0 + 0x000 (datasheet 12.5).
const UART0_DR: Reg = unsafe { Reg::at(UART0 + 0x000) };
// SAFETY: UARTFR, flags, UART0 + 0x018.
const UART0_FR: Reg = unsafe { Reg::at(UART0 + 0x018) };
// SAFETY: UARTIBRD, integer baud divisor, UART0 + 0x024.
const UART0_IBRD: Reg = unsafe { Reg::at(UART0 + 0x024) };
// SAFETY: UARTFBRD, fractional baud divisor, UART0 + 0x028.
const UART0_FBRD: Reg = unsafe { Reg::at(UART0 + 0x028) };
// SAFETY: UARTLCRH, line control, UART0 + 0x02C.
const UART0_LCRH: Reg = unsafe { Reg::at(UART0 + 0x02C) };
// SAFETY: UARTCTL, control, UART0 + 0x030.
const UART0_CTL: Reg = unsafe { Reg::at(UART0 + 0x030) };
// SAFETY: UARTIM, interrupt mask, UART0 + 0x038.
const UART0_IM: Reg = unsafe { Reg::at(UART0 + 0x038) };
// SAFETY: UARTICR, interrupt clear, UART0 + 0x044.
const UART0_ICR: Reg = unsafe { Reg::at(UART0 + 0x044) };
const FR_BUSY: u32 = 1 << 3;
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
const LCRH_FEN: u32 = 1 << 4;
const LCRH_WLEN_8: u32 = 0b11 << 5;
const CTL_UARTEN: u32 = 1 << 0;
const CTL_TXE: u32 = 1 << 8;
const CTL_RXE: u32 = 1 << 9;
/// RX (bit 4), RX timeout (bit 6), and the error interrupts (bits 7..10).
const UART_INT_RX: u32 = (1 << 4) | (1 << 6);
const UART_INT_ALL: u32 = 0x7F0;
/// UART0 interrupt: IRQ 5 (datasheet table 2-9, "Interrupts").
const IRQ_UART0: u16 = 5;

// --- Watchdog timer 0 (datasheet ch. 10, base 0x4000_0000) ---
const WDT: usize = 0x4000_0000;
// SAFETY: WDTLOAD, load, WDT + 0x000 (datasheet 10.5); a write reloads the counter.
const WDT_LOAD: Reg = unsafe { Reg::at(WDT + 0x000) };
// SAFETY: WDTCTL, control, WDT + 0x008; bit 0 INTEN (starts it), bit 1 RESEN.
const WDT_CTL: Reg = unsafe { Reg::at(WDT + 0x008) };
// SAFETY: WDTLOCK, lock, WDT + 0xC00; 0x1ACCE551 unlocks.
const WDT_LOCK: Reg = unsafe { Reg::at(WDT + 0xC00) };
const WDT_CTL_INTEN: u32 = 1 << 0;
const WDT_CTL_RESEN: u32 = 1 << 1;
const WDT_UNLOCK: u32 = 0x1ACC_E551;
/// Watchdog interrupt: IRQ 18 (datasheet table 2-9).
const IRQ_WATCHDOG: u16 = 18;

// --- GPIO port F (datasheet ch. 8, base 0x4002_5000): status LED on PF0 ---
const GPIOF: usize = 0x4002_5000;
// SAFETY: GPIODATA, masked data, GPIOF + (mask << 2): address bit 2 = pin 0 only.
const GPIOF_DATA_PF0: Reg = unsafe { Reg::at(GPIOF + (0x01 << 2)) };
// SAFETY: GPIODIR, direction, GPIOF + 0x400 (datasheet 8.5).
const GPIOF_DIR: Reg = unsafe { Reg::at(GPIOF + 0x400) };
// SAFETY: GPIODEN, digital enable, GPIOF + 0x51C.
const GPIOF_DEN: Reg = unsafe { Reg::at(GPIOF + 0x51C) };

// --- Device-id override (reserved in memory.x, written by QEMU's loader) ---
/// `-device loader,addr=0x2000FFF8,data=0x<ID>1D5E1D5E,data-len=8`: word 0
/// the magic, word 1 the id.
const ID_OVERRIDE_ADDR: usize = 0x2000_FFF8;
const ID_OVERRIDE_MAGIC: u32 = 0x1D5E_1D5E;
const DEFAULT_DEVICE_ID: &str = "lm3s6965-0001";

static MILLIS: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));

#[derive(Clone, Copy)]
struct Irq(u16);

// SAFETY: `number` returns IRQ numbers that exist on the LM3S6965
// (datasheet table 2-9), which is what `InterruptNumber` requires.
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

extern "C" {
    /// cortex-m-rt's default handler (link.x `PROVIDE`s it).
    fn DefaultHandler();
}

/// The device-specific part of the vector table (cortex-m-rt `device`
/// feature): IRQ 0.. of the LM3S6965; unused ones go to DefaultHandler.
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
#[used]
pub static __INTERRUPTS: [unsafe extern "C" fn(); 48] = {
    let mut v = [DefaultHandler as unsafe extern "C" fn(); 48];
    v[IRQ_UART0 as usize] = uart0_isr;
    v[IRQ_WATCHDOG as usize] = watchdog_isr;
    v
};

extern "C" fn uart0_isr() {
    // Bits 8..11 of DR are error flags (framing, parity, break, overrun);
    // the byte goes on anyway and the decoder rejects the frame.
    rx::push_from_isr(|| (UART0_FR.read() & FR_RXFE == 0).then(|| UART0_DR.read() as u8));
    UART0_ICR.write(UART_INT_ALL);
}

/// First watchdog timeout: the main loop stopped feeding. Record it and
/// wait for the second timeout, which resets the chip.
extern "C" fn watchdog_isr() {
    noinit::record(Code::Watchdog);
    loop {
        cortex_m::asm::nop();
    }
}

#[exception]
fn SysTick() {
    cortex_m::interrupt::free(|cs| {
        let ms = MILLIS.borrow(cs);
        ms.set(ms.get().wrapping_add(1));
    });
}

struct Lm3s6965 {
    sensors: SimSensors,
}

impl Clock for Lm3s6965 {
    fn now_ms(&self) -> u64 {
        cortex_m::interrupt::free(|cs| MILLIS.borrow(cs).get())
    }
}

impl SerialTx for Lm3s6965 {
    fn write_all(&mut self, bytes: &[u8]) {
        for &b in bytes {
            while UART0_FR.read() & FR_TXFF != 0 {}
            UART0_DR.write(u32::from(b));
        }
    }
}

impl Sensors for Lm3s6965 {
    fn sample(&mut self, now_ms: u64) -> SensorSample {
        self.sensors.sample(now_ms)
    }
}

impl Led for Lm3s6965 {
    fn set_led(&mut self, on: bool) {
        GPIOF_DATA_PF0.write(u32::from(on));
    }
}

impl Health for Lm3s6965 {
    fn stack_free_min(&mut self) -> u32 {
        stack::free_min()
    }
    fn battery_mv(&mut self) -> Option<u16> {
        None
    }
}

impl Watchdog for Lm3s6965 {
    fn feed(&mut self) {
        // The `wdt-test` build stops feeding 5 s after boot to exercise
        // the watchdog reset path.
        if cfg!(feature = "wdt-test") && self.now_ms() > 5_000 {
            return;
        }
        WDT_LOAD.write(WDT_TIMEOUT_TICKS);
    }
}

impl System for Lm3s6965 {
    fn drain_tx(&mut self) {
        while UART0_FR.read() & FR_BUSY != 0 {}
    }
}

fn hardware_reset_reason() -> Option<ResetReason> {
    let resc = SYSCTL_RESC.read();
    SYSCTL_RESC.write(0);
    if resc & RESC_WDT != 0 {
        Some(ResetReason::Watchdog)
    } else if resc & RESC_SW != 0 {
        Some(ResetReason::Software)
    } else if resc & RESC_BOR != 0 {
        Some(ResetReason::Brownout)
    } else if resc & RESC_POR != 0 {
        Some(ResetReason::PowerOn)
    } else if resc & RESC_EXT != 0 {
        Some(ResetReason::Pin)
    } else {
        None // QEMU: never set
    }
}

/// The id written by QEMU's loader, if any.
fn id_override() -> Option<u32> {
    let p = ID_OVERRIDE_ADDR as *const u32;
    // SAFETY: 0x2000_FFF8..0x2001_0000 is SRAM (datasheet table 2-4) that
    // memory.x keeps out of the linker's RAM region: no Rust object and no
    // stack lives there. Aligned volatile reads of any bit pattern are
    // valid; nothing writes it at run time.
    let (magic, id) = unsafe {
        (
            core::ptr::read_volatile(p),
            core::ptr::read_volatile(p.wrapping_add(1)),
        )
    };
    (magic == ID_OVERRIDE_MAGIC).then_some(id)
}

pub fn main() -> ! {
    // Exactly once, at boot: `take` only fails on a second call.
    let Some(mut cp) = cortex_m::Peripherals::take() else {
        noinit::record(Code::Fault);
        cortex_m::peripheral::SCB::sys_reset();
    };
    let (reset_reason, watchdog_resets) = noinit::take(hardware_reset_reason());

    // Clocks for the watchdog, UART0 and GPIO F.
    SYSCTL_RCGC0.modify(|v| v | RCGC0_WDT);
    SYSCTL_RCGC1.modify(|v| v | RCGC1_UART0);
    SYSCTL_RCGC2.modify(|v| v | RCGC2_GPIOF);
    let _ = SYSCTL_RCGC2.read(); // a few cycles before the peripherals are used

    // UART0: 115200 8N1 at 12.5 MHz: 12.5e6 / (16 × 115200) = 6.78 →
    // IBRD 6, FBRD round(0.78 × 64) = 50. (QEMU ignores the baud rate.)
    UART0_CTL.write(0);
    UART0_IBRD.write(6);
    UART0_FBRD.write(50);
    UART0_LCRH.write(LCRH_WLEN_8 | LCRH_FEN);
    UART0_ICR.write(UART_INT_ALL);
    UART0_IM.write(UART_INT_RX);
    UART0_CTL.write(CTL_UARTEN | CTL_TXE | CTL_RXE);

    // Status LED, PF0 output.
    GPIOF_DIR.modify(|v| v | 1);
    GPIOF_DEN.modify(|v| v | 1);
    GPIOF_DATA_PF0.write(0);

    // Uptime: SysTick at 1 kHz on the core clock.
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(SYSCLK_HZ / 1000 - 1);
    cp.SYST.clear_current();
    cp.SYST.enable_interrupt();
    cp.SYST.enable_counter();

    // Watchdog: interrupt at the first timeout, reset at the second.
    WDT_LOCK.write(WDT_UNLOCK);
    WDT_LOAD.write(WDT_TIMEOUT_TICKS);
    WDT_CTL.write(WDT_CTL_INTEN | WDT_CTL_RESEN);

    // SAFETY: unmasking can break NVIC-mask based critical sections; this
    // firmware uses none (only PRIMASK via `interrupt::free`), and the
    // handlers and the statics they use are initialised above.
    unsafe {
        NVIC::unmask(Irq(IRQ_UART0));
        NVIC::unmask(Irq(IRQ_WATCHDOG));
    }

    let id = id_override();
    let device_id = match id {
        Some(id) => device_id_hex("lm3s6965-", id),
        None => Str::new(DEFAULT_DEVICE_ID).unwrap_or_default(),
    };
    let seed = id.unwrap_or(1) ^ u32::from(watchdog_resets).rotate_left(16) ^ (reset_reason as u32);
    let identity = Identity {
        device_id,
        firmware: Str::new(env!("CARGO_PKG_VERSION")).unwrap_or_default(),
        reset_reason,
        watchdog_resets,
    };
    let mut board = Lm3s6965 {
        sensors: SimSensors::new(seed),
    };
    let mut app = App::new(identity);
    runtime::run(&mut board, &mut app)
}
