//! Hostile: `init` always fails, so the host must disable the app.
#![no_std]
extern crate alloc;
use alloc::{string::String, vec::Vec};
use gatewayd_edge_sdk::{export_app, App, Config, Output, Reading, Window};

struct InitFail;

impl App for InitFail {
    fn init(_: &Config) -> Result<Self, String> {
        Err(String::from("hostile-initfail: this app never starts"))
    }

    fn process(&mut self, _: Vec<Reading>, _: Option<Window>) -> Result<Output, String> {
        unreachable!("init never succeeds")
    }
}

export_app!(InitFail);
