//! Hostile: `process` panics, which the SDK turns into a wasm trap
//! (`unreachable`) after logging the message at `error`.
#![no_std]
extern crate alloc;
use alloc::{string::String, vec::Vec};
use gatewayd_edge_sdk::{export_app, App, Config, Output, Reading, Window};

struct Trap;

impl App for Trap {
    fn init(_: &Config) -> Result<Self, String> {
        Ok(Trap)
    }

    fn process(&mut self, readings: Vec<Reading>, _: Option<Window>) -> Result<Output, String> {
        panic!("hostile-trap: refusing {} readings", readings.len())
    }
}

export_app!(Trap);
