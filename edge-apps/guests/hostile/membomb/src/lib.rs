//! Hostile: `process` allocates (and touches) memory without bound.
#![no_std]
extern crate alloc;
use alloc::{string::String, vec, vec::Vec};
use gatewayd_edge_sdk::{export_app, App, Config, Output, Reading, Window};

struct MemBomb;

impl App for MemBomb {
    fn init(_: &Config) -> Result<Self, String> {
        Ok(MemBomb)
    }

    fn process(&mut self, _: Vec<Reading>, _: Option<Window>) -> Result<Output, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // 1 MiB chunks, filled so the pages are really used.
            hoard.push(vec![0xA5; 1 << 20]);
            core::hint::black_box(&hoard);
        }
    }
}

export_app!(MemBomb);
