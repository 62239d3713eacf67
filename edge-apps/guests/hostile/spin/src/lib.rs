//! Hostile: `process` never returns.
#![no_std]
extern crate alloc;
use alloc::{string::String, vec::Vec};
use gatewayd_edge_sdk::{export_app, App, Config, Output, Reading, Window};

struct Spin;

impl App for Spin {
    fn init(_: &Config) -> Result<Self, String> {
        Ok(Spin)
    }

    fn process(&mut self, _: Vec<Reading>, _: Option<Window>) -> Result<Output, String> {
        let mut i: u64 = 0;
        loop {
            // black_box: a side-effect-free loop the optimiser cannot remove.
            i = core::hint::black_box(i.wrapping_add(1));
        }
    }
}

export_app!(Spin);
