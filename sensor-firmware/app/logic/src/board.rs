//! What the application needs from a board.
//!
//! The firmware implements these for each board (`firmware/src/board/`);
//! the tests implement them with a mock. Board services the application
//! logic does not call (watchdog, reset reason, reboot, the RX interrupt
//! queue) are traits of the firmware crate, next to the main loop.

/// Monotonic time since boot.
pub trait Clock {
    /// Milliseconds since boot (never wraps in practice: 64 bits).
    fn now_ms(&self) -> u64;
}

/// The UART's transmit side.
pub trait SerialTx {
    /// Queues or writes all of `bytes` (may block until they fit the FIFO).
    fn write_all(&mut self, bytes: &[u8]);
}

/// One sample of the board's sensors; `None` for a sensor it lacks or
/// that failed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SensorSample {
    /// Temperature, °C.
    pub temperature_c: Option<f32>,
    /// Relative humidity, %RH.
    pub humidity_rh: Option<f32>,
}

/// The sensors.
pub trait Sensors {
    /// Takes one sample (`now_ms`: the time it is taken at).
    fn sample(&mut self, now_ms: u64) -> SensorSample;
}

/// The identify LED (a no-op on boards without one).
pub trait Led {
    /// Switches the LED.
    fn set_led(&mut self, on: bool);
}

/// Health figures for `Diagnostics`.
pub trait Health {
    /// Lowest free stack since boot, bytes.
    fn stack_free_min(&mut self) -> u32;
    /// Battery voltage, if the board measures it.
    fn battery_mv(&mut self) -> Option<u16>;
}

/// Everything [`App`](crate::App) uses.
pub trait Board: Clock + SerialTx + Sensors + Led + Health {}

impl<T: Clock + SerialTx + Sensors + Led + Health> Board for T {}
