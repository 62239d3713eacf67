//! Test helpers: frames built the way a device builds them, with the
//! `lorawan` crate's creators (not with this crate's code).
#![allow(dead_code)]

use std::time::Duration;

use gatewayd_lorawan_proto::{DataRate, Eui64, RxInfo};
use lorawan::creator::{DataPayloadCreator, JoinRequestCreator};
use lorawan::keys::{AppKey, AppSKey, NewSKey};
use lorawan::maccommands::SerializableMacCommand;
use lorawan::parser::FCtrl;

/// A MAC command given as raw CID and payload.
pub struct RawMac(pub u8, pub Vec<u8>);

impl SerializableMacCommand for RawMac {
    fn payload_bytes(&self) -> &[u8] {
        &self.1
    }
    fn cid(&self) -> u8 {
        self.0
    }
    fn payload_len(&self) -> usize {
        self.1.len()
    }
}

/// What a device puts in a data uplink.
pub struct Up<'a> {
    pub dev_addr: u32,
    pub nwk: [u8; 16],
    pub app: [u8; 16],
    pub fcnt: u32,
    pub confirmed: bool,
    /// FCtrl without FOptsLen (ADR 0x80, ADRACKReq 0x40, ACK 0x20).
    pub fctrl: u8,
    pub fport: Option<u8>,
    pub payload: &'a [u8],
    /// MAC commands: in FOpts, or the FRMPayload when `fport == Some(0)`.
    pub mac: Vec<RawMac>,
}

impl Default for Up<'_> {
    fn default() -> Self {
        Up {
            dev_addr: 0x2601_1BDA,
            nwk: [0x11; 16],
            app: [0x22; 16],
            fcnt: 0,
            confirmed: false,
            fctrl: 0,
            fport: Some(1),
            payload: b"",
            mac: Vec::new(),
        }
    }
}

/// Builds a data uplink as a device would.
pub fn uplink(u: &Up<'_>) -> Vec<u8> {
    let mut c = DataPayloadCreator::new();
    c.set_confirmed(u.confirmed)
        .set_uplink(true)
        .set_dev_addr(&u.dev_addr.to_le_bytes())
        .set_fctrl(&FCtrl::new(u.fctrl, true))
        .set_fcnt(u.fcnt);
    if let Some(p) = u.fport {
        c.set_f_port(p);
    }
    let cmds: Vec<&dyn SerializableMacCommand> = u
        .mac
        .iter()
        .map(|m| m as &dyn SerializableMacCommand)
        .collect();
    c.build(
        u.payload,
        &cmds,
        &NewSKey::from(u.nwk),
        &AppSKey::from(u.app),
    )
    .unwrap()
    .to_vec()
}

/// Builds a JoinRequest as a device would (EUIs most significant byte
/// first, as registered).
pub fn join_request(join_eui: Eui64, dev_eui: Eui64, dev_nonce: u16, app_key: [u8; 16]) -> Vec<u8> {
    let mut c = JoinRequestCreator::new();
    c.set_app_eui(&join_eui.to_le_bytes())
        .set_dev_eui(&dev_eui.to_le_bytes())
        .set_dev_nonce(&dev_nonce.to_le_bytes());
    c.build(&AppKey::from(app_key)).to_vec()
}

/// Radio metadata of one reception (EU868 868.1 MHz SF7BW125 unless changed).
pub fn rx(gateway: u64, tmst: u32, rssi: i16, snr: f32) -> RxInfo {
    RxInfo {
        gateway: Eui64::from(gateway),
        tmst,
        freq_hz: 868_100_000,
        data_rate: DataRate { sf: 7, bw_khz: 125 },
        rssi,
        snr,
        time: Some(Duration::new(1_600_000_000, 500_000_000)),
    }
}

/// Decodes a hex string (test vectors).
pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}
