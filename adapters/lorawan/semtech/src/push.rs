//! PUSH_DATA body: received packets (`rxpk`) and gateway status (`stat`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, FieldError, RxPkError};
use crate::json::{decode_base64, encode_base64, json_message, write_json, Bounded, ObjectOnly};
use crate::radio::{check_freq, hz_from_mhz, CodingRate, CrcStatus, DataRate, Modulation, RawDatr};
use crate::MAX_RXPK;

/// The JSON object of a PUSH_DATA.
///
/// Each `rxpk` entry is decoded on its own: one that is malformed is an
/// `Err` at its index and the others are still there. The same holds for
/// `stat`. Only the JSON syntax, the root shape (an object whose `rxpk`, if
/// present, is an array) and the [`MAX_RXPK`] limit fail the whole datagram.
///
/// Encoding writes the `Ok` entries only (and `stat` only if `Ok`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushBody {
    /// Received packets, in datagram order.
    pub rxpk: Vec<Result<RxPk, RxPkError>>,
    /// Gateway status, if the datagram had a `stat` object.
    pub stat: Option<Result<Stat, FieldError>>,
}

impl PushBody {
    /// A body of received packets only.
    pub fn from_rxpk(rxpk: impl IntoIterator<Item = RxPk>) -> Self {
        PushBody {
            rxpk: rxpk.into_iter().map(Ok).collect(),
            stat: None,
        }
    }

    /// A body of a status report only.
    pub fn from_stat(stat: Stat) -> Self {
        PushBody {
            rxpk: Vec::new(),
            stat: Some(Ok(stat)),
        }
    }

    /// The packets that decoded.
    pub fn packets(&self) -> impl Iterator<Item = &RxPk> {
        self.rxpk.iter().filter_map(|r| r.as_ref().ok())
    }

    /// The `rxpk` entries that did not decode.
    pub fn rxpk_errors(&self) -> impl Iterator<Item = &RxPkError> {
        self.rxpk.iter().filter_map(|r| r.as_ref().err())
    }

    /// The status report, if present and valid.
    pub fn stat(&self) -> Option<&Stat> {
        self.stat.as_ref().and_then(|s| s.as_ref().ok())
    }

    /// Why the `stat` object was unusable, if it was.
    pub fn stat_error(&self) -> Option<&FieldError> {
        self.stat.as_ref().and_then(|s| s.as_ref().err())
    }

    /// True when no entry carries an error.
    pub fn is_clean(&self) -> bool {
        self.rxpk.iter().all(Result::is_ok) && !matches!(self.stat, Some(Err(_)))
    }

    /// The body without its errors: what [`encode`](crate::Packet::encode)
    /// writes.
    pub fn without_errors(self) -> Self {
        PushBody {
            rxpk: self.rxpk.into_iter().filter(Result::is_ok).collect(),
            stat: self.stat.filter(Result::is_ok),
        }
    }

    pub(crate) fn decode(text: &str) -> Result<Self, Error> {
        // Fast path: everything well-formed, one pass straight into the wire
        // structs. Anything wrong (even in one rxpk) falls back to the slow
        // path, which finds out per entry.
        if let Ok(ObjectOnly(fast)) = serde_json::from_str::<ObjectOnly<PushFast>>(text) {
            let (rxpk, total) = match fast.rxpk {
                Some(b) => (b.items, b.total),
                None => (Vec::new(), 0),
            };
            if total > MAX_RXPK {
                return Err(Error::TooManyRxPk(total));
            }
            return Ok(PushBody {
                rxpk: rxpk
                    .into_iter()
                    .enumerate()
                    .map(|(index, ObjectOnly(raw))| {
                        raw.validate().map_err(|error| RxPkError { index, error })
                    })
                    .collect(),
                stat: fast.stat.map(|ObjectOnly(s)| Ok(s)),
            });
        }

        let ObjectOnly(slow) = serde_json::from_str::<ObjectOnly<PushSlow>>(text)
            .map_err(|e| Error::Json(json_message(e)))?;
        let (rxpk, total) = match slow.rxpk {
            Some(b) => (b.items, b.total),
            None => (Vec::new(), 0),
        };
        if total > MAX_RXPK {
            return Err(Error::TooManyRxPk(total));
        }
        Ok(PushBody {
            rxpk: rxpk
                .into_iter()
                .enumerate()
                .map(|(index, value)| {
                    ObjectOnly::<RxPkIn>::deserialize(value)
                        .map_err(|e| FieldError::Json(json_message(e)))
                        .and_then(|ObjectOnly(raw)| raw.validate())
                        .map_err(|error| RxPkError { index, error })
                })
                .collect(),
            stat: slow.stat.map(|value| {
                ObjectOnly::<Stat>::deserialize(value)
                    .map(|ObjectOnly(s)| s)
                    .map_err(|e| FieldError::Json(json_message(e)))
            }),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let body = PushOut {
            rxpk: self.packets().map(RxPk::to_wire).collect(),
            stat: self.stat(),
        };
        write_json(out, &body);
    }
}

/// One received radio packet (`rxpk` entry).
///
/// `modu` is implied by [`datr`](Self::datr) and `size` by
/// [`data`](Self::data): decoding checks both against the wire fields and
/// encoding derives them, so they cannot disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct RxPk {
    /// UTC time of reception, ISO 8601 "compact" (`2013-03-31T16:21:17.528002Z`),
    /// kept as sent. Only with a GPS.
    pub time: Option<String>,
    /// GPS time of reception, milliseconds since 1980-01-06. Only with a GPS.
    pub tmms: Option<u64>,
    /// Concentrator counter (µs) at the end of reception: the reference for
    /// class-A downlink timing.
    pub tmst: u32,
    /// Centre frequency in MHz, as sent (see [`freq_hz`](Self::freq_hz)).
    pub freq: f64,
    /// Concentrator IF channel.
    pub chan: u8,
    /// Concentrator RF chain.
    pub rfch: u8,
    /// CRC status.
    pub stat: CrcStatus,
    /// Data rate (and so the modulation).
    pub datr: DataRate,
    /// Coding rate; LoRa only.
    pub codr: Option<CodingRate>,
    /// RSSI in dBm. Absent from some multi-antenna (v2) gateways, which give
    /// [`rsig`](Self::rsig) instead; see [`rssi_dbm`](Self::rssi_dbm).
    pub rssi: Option<i16>,
    /// SNR in dB; LoRa only.
    pub lsnr: Option<f64>,
    /// The PHY payload, base64-decoded.
    pub data: Vec<u8>,
    /// Per-antenna signal data (`rsig`, multi-antenna gateways); empty if
    /// absent.
    pub rsig: Vec<RSig>,
}

impl RxPk {
    /// `freq` in Hz, rounded to the nearest Hz (868.1 → 868 100 000).
    pub fn freq_hz(&self) -> u32 {
        hz_from_mhz(self.freq)
    }

    /// The modulation, from [`datr`](Self::datr).
    pub fn modulation(&self) -> Modulation {
        self.datr.modulation()
    }

    /// `size`: the payload length.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// `rssi`, or else the best `rsig[].rssic`.
    pub fn rssi_dbm(&self) -> Option<i16> {
        self.rssi
            .or_else(|| self.rsig.iter().map(|r| r.rssic).max())
    }

    /// `lsnr`, or else the best `rsig[].lsnr`.
    pub fn snr_db(&self) -> Option<f64> {
        self.lsnr.or_else(|| {
            self.rsig
                .iter()
                .filter_map(|r| r.lsnr)
                .fold(None, |best: Option<f64>, x| {
                    Some(best.map_or(x, |b| b.max(x)))
                })
        })
    }

    fn to_wire(&self) -> RxPkOut<'_> {
        RxPkOut {
            tmst: self.tmst,
            time: self.time.as_deref(),
            tmms: self.tmms,
            chan: self.chan,
            rfch: self.rfch,
            freq: self.freq,
            stat: self.stat.as_i8(),
            modu: self.datr.modulation().as_str(),
            datr: &self.datr,
            codr: self.codr.as_ref(),
            lsnr: self.lsnr,
            rssi: self.rssi,
            size: self.data.len(),
            data: encode_base64(&self.data),
            rsig: &self.rsig,
        }
    }
}

/// Signal data of one antenna (`rsig` entry, multi-antenna gateways).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RSig {
    /// Antenna number.
    pub ant: u8,
    /// Concentrator IF channel.
    pub chan: u8,
    /// RSSI of the channel, dBm.
    pub rssic: i16,
    /// RSSI of the signal, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssis: Option<i16>,
    /// SNR, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsnr: Option<f64>,
    /// Encrypted fine timestamp, base64, kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etime: Option<String>,
    /// Frequency offset, Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foff: Option<i32>,
}

/// Gateway status (`stat` object). Every field is optional: forwarders
/// differ (no GPS → no position; SX1302 adds `temp`). Unknown fields are
/// ignored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stat {
    /// Gateway system time, ISO 8601 "expanded" (`2014-01-12 08:59:28 GMT`),
    /// kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Latitude, degrees, north positive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lati: Option<f64>,
    /// Longitude, degrees, east positive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long: Option<f64>,
    /// Altitude, metres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alti: Option<i32>,
    /// Radio packets received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxnb: Option<u32>,
    /// Radio packets received with a valid CRC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxok: Option<u32>,
    /// Radio packets forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxfw: Option<u32>,
    /// Percentage of upstream datagrams acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ackr: Option<f64>,
    /// Downlink datagrams received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwnb: Option<u32>,
    /// Packets emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txnb: Option<u32>,
    /// Concentrator temperature, °C (SX1302 forwarders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp: Option<f64>,
}

/// A gateway position from a [`Stat`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    /// Degrees, north positive.
    pub latitude: f64,
    /// Degrees, east positive.
    pub longitude: f64,
    /// Metres, if given.
    pub altitude: Option<i32>,
}

/// The counters of a [`Stat`] with absent ones as 0, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StatCounters {
    /// `rxnb`.
    pub rx_received: u32,
    /// `rxok`.
    pub rx_ok: u32,
    /// `rxfw`.
    pub rx_forwarded: u32,
    /// `ackr`, percent.
    pub ack_ratio_percent: f64,
    /// `dwnb`.
    pub downlinks_received: u32,
    /// `txnb`.
    pub tx_emitted: u32,
}

impl Stat {
    /// Position, when both latitude and longitude are given.
    pub fn location(&self) -> Option<Location> {
        Some(Location {
            latitude: self.lati?,
            longitude: self.long?,
            altitude: self.alti,
        })
    }

    /// Counters, absent ones as 0.
    pub fn counters(&self) -> StatCounters {
        StatCounters {
            rx_received: self.rxnb.unwrap_or(0),
            rx_ok: self.rxok.unwrap_or(0),
            rx_forwarded: self.rxfw.unwrap_or(0),
            ack_ratio_percent: self.ackr.unwrap_or(0.0),
            downlinks_received: self.dwnb.unwrap_or(0),
            tx_emitted: self.txnb.unwrap_or(0),
        }
    }
}

// ---- wire structs --------------------------------------------------------

#[derive(Deserialize)]
struct PushFast {
    rxpk: Option<Bounded<ObjectOnly<RxPkIn>>>,
    stat: Option<ObjectOnly<Stat>>,
}

#[derive(Deserialize)]
struct PushSlow {
    rxpk: Option<Bounded<Value>>,
    stat: Option<Value>,
}

#[derive(Deserialize)]
struct RxPkIn {
    time: Option<String>,
    tmms: Option<u64>,
    tmst: u32,
    freq: f64,
    chan: u8,
    rfch: u8,
    stat: i64,
    modu: String,
    datr: RawDatr,
    codr: Option<String>,
    rssi: Option<i16>,
    lsnr: Option<f64>,
    size: u64,
    data: String,
    rsig: Option<Vec<ObjectOnly<RSig>>>,
}

impl RxPkIn {
    fn validate(self) -> Result<RxPk, FieldError> {
        let freq = check_freq(self.freq)?;
        let stat = CrcStatus::from_wire(self.stat)?;
        let modu = Modulation::parse(&self.modu)?;
        let datr = DataRate::from_wire(modu, self.datr)?;
        let data = decode_base64(&self.data)?;
        if self.size != data.len() as u64 {
            return Err(FieldError::SizeMismatch {
                declared: self.size,
                actual: data.len(),
            });
        }
        Ok(RxPk {
            time: self.time,
            tmms: self.tmms,
            tmst: self.tmst,
            freq,
            chan: self.chan,
            rfch: self.rfch,
            stat,
            datr,
            codr: self.codr.map(CodingRate::from_wire),
            rssi: self.rssi,
            lsnr: self.lsnr,
            data,
            rsig: self
                .rsig
                .unwrap_or_default()
                .into_iter()
                .map(|ObjectOnly(r)| r)
                .collect(),
        })
    }
}

#[derive(Serialize)]
struct PushOut<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rxpk: Vec<RxPkOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stat: Option<&'a Stat>,
}

/// Field order as `lora_pkt_fwd` writes it.
#[derive(Serialize)]
struct RxPkOut<'a> {
    tmst: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tmms: Option<u64>,
    chan: u8,
    rfch: u8,
    freq: f64,
    stat: i8,
    modu: &'static str,
    datr: &'a DataRate,
    #[serde(skip_serializing_if = "Option::is_none")]
    codr: Option<&'a CodingRate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lsnr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rssi: Option<i16>,
    size: usize,
    data: String,
    #[serde(skip_serializing_if = "<[RSig]>::is_empty")]
    rsig: &'a [RSig],
}
