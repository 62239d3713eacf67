//! Downstream bodies: PULL_RESP `txpk` and TX_ACK `txpk_ack`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldError};
use crate::json::{decode_base64, encode_base64, json_message, write_json, ObjectOnly};
use crate::radio::{
    check_freq, hz_from_mhz, mhz_from_hz, CodingRate, DataRate, Modulation, RawDatr,
};

/// The JSON object of a PULL_RESP: `{"txpk":{...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PullRespBody {
    /// The packet to transmit.
    pub txpk: TxPk,
}

impl From<TxPk> for PullRespBody {
    fn from(txpk: TxPk) -> Self {
        PullRespBody { txpk }
    }
}

impl PullRespBody {
    pub(crate) fn decode(text: &str) -> Result<Self, Error> {
        let ObjectOnly(root) = serde_json::from_str::<ObjectOnly<PullRespIn>>(text)
            .map_err(|e| Error::Json(json_message(e)))?;
        let ObjectOnly(raw) = root.txpk;
        Ok(PullRespBody {
            txpk: raw.validate().map_err(Error::TxPk)?,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        write_json(
            out,
            &PullRespOut {
                txpk: self.txpk.to_wire(),
            },
        );
    }
}

/// A packet for the gateway to transmit (`txpk`).
///
/// As for [`RxPk`](crate::RxPk), `modu` comes from [`datr`](Self::datr) and
/// `size` from [`data`](Self::data). `imme`, `ipol` and `ncrc` absent on the
/// wire mean false to `lora_pkt_fwd`, so they are plain `bool`s; `imme` and
/// `ipol` are always written, `ncrc` only when true.
#[derive(Debug, Clone, PartialEq)]
pub struct TxPk {
    /// Transmit immediately (class C), ignoring `tmst` and `tmms`.
    pub imme: bool,
    /// Transmit when the concentrator counter reaches this value (class A:
    /// the uplink's `tmst` plus the RX1/RX2 delay).
    pub tmst: Option<u32>,
    /// Transmit at this GPS time, ms since 1980-01-06 (class B).
    pub tmms: Option<u64>,
    /// Centre frequency in MHz. Use [`mhz_from_hz`] (or
    /// [`set_freq_hz`](Self::set_freq_hz)) to go from Hz.
    pub freq: f64,
    /// Concentrator RF chain to transmit on.
    pub rfch: u8,
    /// Output power, dBm.
    pub powe: Option<i8>,
    /// Data rate (and so the modulation).
    pub datr: DataRate,
    /// Coding rate; required by `lora_pkt_fwd` for LoRa.
    pub codr: Option<CodingRate>,
    /// FSK frequency deviation, Hz; required by `lora_pkt_fwd` for FSK.
    pub fdev: Option<u32>,
    /// LoRa polarisation inversion: true for LoRaWAN downlinks.
    pub ipol: bool,
    /// Preamble length, symbols (forwarder default 8 for LoRa).
    pub prea: Option<u16>,
    /// Disable the physical-layer CRC.
    pub ncrc: bool,
    /// The PHY payload.
    pub data: Vec<u8>,
}

impl TxPk {
    /// A LoRaWAN class-A downlink: sent at concentrator time `tmst` (the
    /// uplink's `tmst` + 1 s for RX1, + 2 s for RX2, or the join delays), on
    /// RF chain 0, coding rate 4/5 and inverted polarity for LoRa. An FSK
    /// `datr` gets the LoRaWAN 25 kHz deviation instead.
    ///
    /// `ncrc` stays false (the forwarder's default, as ChirpStack sends it):
    /// the LoRa explicit header tells the device whether a CRC follows.
    pub fn lorawan_class_a(
        tmst: u32,
        freq_mhz: f64,
        datr: DataRate,
        power_dbm: i8,
        payload: impl Into<Vec<u8>>,
    ) -> Self {
        let lora = datr.modulation() == Modulation::Lora;
        TxPk {
            imme: false,
            tmst: Some(tmst),
            tmms: None,
            freq: freq_mhz,
            rfch: 0,
            powe: Some(power_dbm),
            datr,
            codr: lora.then_some(CodingRate::Cr45),
            fdev: (!lora).then_some(25_000),
            ipol: lora,
            prea: None,
            ncrc: false,
            data: payload.into(),
        }
    }

    /// `freq` in Hz, rounded to the nearest Hz.
    pub fn freq_hz(&self) -> u32 {
        hz_from_mhz(self.freq)
    }

    /// Sets `freq` from Hz so that `lora_pkt_fwd`'s truncating conversion
    /// gets `hz` back exactly (see [`mhz_from_hz`]).
    pub fn set_freq_hz(&mut self, hz: u32) {
        self.freq = mhz_from_hz(hz);
    }

    /// The modulation, from [`datr`](Self::datr).
    pub fn modulation(&self) -> Modulation {
        self.datr.modulation()
    }

    /// `size`: the payload length.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    fn to_wire(&self) -> TxPkOut<'_> {
        TxPkOut {
            imme: self.imme,
            tmst: self.tmst,
            tmms: self.tmms,
            freq: self.freq,
            rfch: self.rfch,
            powe: self.powe,
            modu: self.datr.modulation().as_str(),
            datr: &self.datr,
            codr: self.codr.as_ref(),
            fdev: self.fdev,
            ipol: self.ipol,
            prea: self.prea,
            size: self.data.len(),
            data: encode_base64(&self.data),
            ncrc: self.ncrc.then_some(true),
        }
    }
}

/// The JSON object of a TX_ACK: `{"txpk_ack":{...}}`.
///
/// A TX_ACK without JSON means the downlink was accepted (the datagram then
/// decodes with `body: None`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TxAckBody {
    /// `error`: why the downlink was rejected; `NONE` means accepted.
    pub error: Option<TxAckStatus>,
    /// `warn`: accepted, with a caveat (SX1302 forwarders send
    /// `TX_POWER` with the power actually used in `value`).
    pub warn: Option<TxAckStatus>,
    /// `value`: detail for `warn`/`error`, e.g. the dBm used.
    pub value: Option<i64>,
}

impl TxAckBody {
    /// A TX_ACK body reporting `error`.
    pub fn error(status: TxAckStatus) -> Self {
        TxAckBody {
            error: Some(status),
            ..TxAckBody::default()
        }
    }

    /// True when the gateway scheduled the downlink (no error, or `NONE`).
    pub fn is_accepted(&self) -> bool {
        matches!(self.error, None | Some(TxAckStatus::None))
    }

    pub(crate) fn decode(text: &str) -> Result<Self, Error> {
        let ObjectOnly(root) = serde_json::from_str::<ObjectOnly<TxAckIn>>(text)
            .map_err(|e| Error::Json(json_message(e)))?;
        let ObjectOnly(inner) = root.txpk_ack;
        Ok(TxAckBody {
            error: inner.error.map(TxAckStatus::from_wire),
            warn: inner.warn.map(TxAckStatus::from_wire),
            value: inner.value,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        write_json(
            out,
            &TxAckOut {
                txpk_ack: TxAckInnerOut {
                    error: self.error.as_ref().map(TxAckStatus::as_str),
                    warn: self.warn.as_ref().map(TxAckStatus::as_str),
                    value: self.value,
                },
            },
        );
    }
}

/// A `txpk_ack` `error` (or `warn`) value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxAckStatus {
    /// `NONE`: programmed for transmission.
    None,
    /// `TOO_LATE`: too late to program it.
    TooLate,
    /// `TOO_EARLY`: timestamp too far in the future.
    TooEarly,
    /// `COLLISION_PACKET`: another packet is already programmed then.
    CollisionPacket,
    /// `COLLISION_BEACON`: a beacon is planned then.
    CollisionBeacon,
    /// `TX_FREQ`: frequency not supported by the TX RF chain.
    TxFreq,
    /// `TX_POWER`: power not supported (as `warn`: power was adjusted).
    TxPower,
    /// `GPS_UNLOCKED`: `tmms` given but no GPS time reference.
    GpsUnlocked,
    /// Anything else, e.g. `UNKNOWN`, kept verbatim.
    Other(String),
}

impl TxAckStatus {
    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            TxAckStatus::None => "NONE",
            TxAckStatus::TooLate => "TOO_LATE",
            TxAckStatus::TooEarly => "TOO_EARLY",
            TxAckStatus::CollisionPacket => "COLLISION_PACKET",
            TxAckStatus::CollisionBeacon => "COLLISION_BEACON",
            TxAckStatus::TxFreq => "TX_FREQ",
            TxAckStatus::TxPower => "TX_POWER",
            TxAckStatus::GpsUnlocked => "GPS_UNLOCKED",
            TxAckStatus::Other(s) => s,
        }
    }

    fn from_wire(s: String) -> Self {
        match s.as_str() {
            "NONE" => TxAckStatus::None,
            "TOO_LATE" => TxAckStatus::TooLate,
            "TOO_EARLY" => TxAckStatus::TooEarly,
            "COLLISION_PACKET" => TxAckStatus::CollisionPacket,
            "COLLISION_BEACON" => TxAckStatus::CollisionBeacon,
            "TX_FREQ" => TxAckStatus::TxFreq,
            "TX_POWER" => TxAckStatus::TxPower,
            "GPS_UNLOCKED" => TxAckStatus::GpsUnlocked,
            _ => TxAckStatus::Other(s),
        }
    }
}

impl From<&str> for TxAckStatus {
    fn from(s: &str) -> Self {
        TxAckStatus::from_wire(s.to_owned())
    }
}

impl fmt::Display for TxAckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---- wire structs --------------------------------------------------------

#[derive(Deserialize)]
struct PullRespIn {
    txpk: ObjectOnly<TxPkIn>,
}

#[derive(Deserialize)]
struct TxPkIn {
    imme: Option<bool>,
    tmst: Option<u32>,
    tmms: Option<u64>,
    freq: f64,
    rfch: u8,
    powe: Option<i8>,
    modu: String,
    datr: RawDatr,
    codr: Option<String>,
    fdev: Option<u32>,
    ipol: Option<bool>,
    prea: Option<u16>,
    size: Option<u64>,
    data: String,
    ncrc: Option<bool>,
}

impl TxPkIn {
    fn validate(self) -> Result<TxPk, FieldError> {
        let freq = check_freq(self.freq)?;
        let modu = Modulation::parse(&self.modu)?;
        let datr = DataRate::from_wire(modu, self.datr)?;
        let data = decode_base64(&self.data)?;
        if let Some(size) = self.size {
            if size != data.len() as u64 {
                return Err(FieldError::SizeMismatch {
                    declared: size,
                    actual: data.len(),
                });
            }
        }
        Ok(TxPk {
            imme: self.imme.unwrap_or(false),
            tmst: self.tmst,
            tmms: self.tmms,
            freq,
            rfch: self.rfch,
            powe: self.powe,
            datr,
            codr: self.codr.map(CodingRate::from_wire),
            fdev: self.fdev,
            ipol: self.ipol.unwrap_or(false),
            prea: self.prea,
            ncrc: self.ncrc.unwrap_or(false),
            data,
        })
    }
}

#[derive(Serialize)]
struct PullRespOut<'a> {
    txpk: TxPkOut<'a>,
}

#[derive(Serialize)]
struct TxPkOut<'a> {
    imme: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tmst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tmms: Option<u64>,
    freq: f64,
    rfch: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    powe: Option<i8>,
    modu: &'static str,
    datr: &'a DataRate,
    #[serde(skip_serializing_if = "Option::is_none")]
    codr: Option<&'a CodingRate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fdev: Option<u32>,
    ipol: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    prea: Option<u16>,
    size: usize,
    data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ncrc: Option<bool>,
}

#[derive(Deserialize)]
struct TxAckIn {
    txpk_ack: ObjectOnly<TxAckInnerIn>,
}

#[derive(Deserialize)]
struct TxAckInnerIn {
    error: Option<String>,
    warn: Option<String>,
    value: Option<i64>,
}

#[derive(Serialize)]
struct TxAckOut<'a> {
    txpk_ack: TxAckInnerOut<'a>,
}

#[derive(Serialize)]
struct TxAckInnerOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<i64>,
}
