//! Hostile: `process` emits `count` readings (config, default 1,000,000).
//! They are as small as a reading gets (empty device, no measurements), so
//! the guest's own memory use is the canonical minimum (~208 bytes each).
#![no_std]
extern crate alloc;
use alloc::{string::String, vec::Vec};
use gatewayd_edge_sdk::{export_app, App, Config, Output, Reading, Window};

struct Flood {
    count: usize,
}

impl App for Flood {
    fn init(config: &Config) -> Result<Self, String> {
        let count = config.u64_or("count", 1_000_000)?;
        Ok(Flood {
            count: usize::try_from(count).map_err(|_| String::from("`count` too large"))?,
        })
    }

    fn process(&mut self, _: Vec<Reading>, _: Option<Window>) -> Result<Output, String> {
        let mut out = Output::pass_all();
        out.emit = (0..self.count)
            .map(|i| Reading::new(String::new(), i as i64, Vec::new()))
            .collect();
        Ok(out)
    }
}

export_app!(Flood);
