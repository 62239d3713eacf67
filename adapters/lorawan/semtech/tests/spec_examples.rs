//! The examples of `PROTOCOL.TXT`, byte-exact headers, and datagrams shaped
//! exactly like `lora_pkt_fwd` (SX1301 v4.0.1 and SX1302 HAL) writes them,
//! derived from their format strings.

use gatewayd_semtech_udp::{
    decode, CodingRate, CrcStatus, DataRate, Datagram, Eui, FieldError, Modulation, Packet,
    ProtocolVersion, PullRespBody, PushBody, RxPk, Stat, Token, TxAckBody, TxAckStatus, TxPk,
};
use serde_json::{json, Value};

const EUI: [u8; 8] = [0xAA, 0x55, 0x5A, 0x00, 0x00, 0x00, 0x01, 0x01];

fn datagram(id: u8, token: [u8; 2], eui: Option<[u8; 8]>, json: &str) -> Vec<u8> {
    let mut d = vec![2, token[0], token[1], id];
    if let Some(eui) = eui {
        d.extend_from_slice(&eui);
    }
    d.extend_from_slice(json.as_bytes());
    d
}

/// The JSON after the header of an encoded datagram.
fn body_json(bytes: &[u8], header: usize) -> Value {
    serde_json::from_slice(&bytes[header..]).unwrap()
}

fn push_body(p: Packet) -> PushBody {
    match p {
        Packet::PushData { body, .. } => body,
        other => panic!("not PUSH_DATA: {other:?}"),
    }
}

// PROTOCOL.TXT section 4, first example, verbatim (whitespace included).
const SPEC_RXPK: &str = r#"{"rxpk":[
	{
		"time":"2013-03-31T16:21:17.528002Z",
		"tmst":3512348611,
		"chan":2,
		"rfch":0,
		"freq":866.349812,
		"stat":1,
		"modu":"LORA",
		"datr":"SF7BW125",
		"codr":"4/6",
		"rssi":-35,
		"lsnr":5.1,
		"size":32,
		"data":"-DS4CGaDCdG+48eJNM3Vai-zDpsR71Pn9CPA9uCON84"
	},{
		"time":"2013-03-31T16:21:17.530974Z",
		"tmst":3512348514,
		"chan":9,
		"rfch":1,
		"freq":869.1,
		"stat":1,
		"modu":"FSK",
		"datr":50000,
		"rssi":-75,
		"size":16,
		"data":"VEVTVF9QQUNLRVRfMTIzNA=="
	},{
		"time":"2013-03-31T16:21:17.532038Z",
		"tmst":3316387610,
		"chan":0,
		"rfch":0,
		"freq":863.00981,
		"stat":1,
		"modu":"LORA",
		"datr":"SF10BW125",
		"codr":"4/7",
		"rssi":-38,
		"lsnr":5.5,
		"size":32,
		"data":"ysgRl452xNLep9S1NTIg2lomKDxUgn3DJ7DE+b00Ass"
	}
]}"#;

const SPEC_STAT: &str = r#"{"stat":{
	"time":"2014-01-12 08:59:28 GMT",
	"lati":46.24000,
	"long":3.25230,
	"alti":145,
	"rxnb":2,
	"rxok":2,
	"rxfw":2,
	"ackr":100.0,
	"dwnb":2,
	"txnb":2
}}"#;

const SPEC_TXPK_LORA: &str = r#"{"txpk":{
	"imme":true,
	"freq":864.123456,
	"rfch":0,
	"powe":14,
	"modu":"LORA",
	"datr":"SF11BW125",
	"codr":"4/6",
	"ipol":false,
	"size":32,
	"data":"H3P3N2i9qc4yt7rK7ldqoeCVJGBybzPY5h1Dd7P7p8v"
}}"#;

const SPEC_TXPK_FSK: &str = r#"{"txpk":{
	"imme":true,
	"freq":861.3,
	"rfch":0,
	"powe":12,
	"modu":"FSK",
	"datr":50000,
	"fdev":3000,
	"size":32,
	"data":"H3P3N2i9qc4yt7rK7ldqoeCVJGBybzPY5h1Dd7P7p8v"
}}"#;

#[test]
fn spec_rxpk_example_decodes_its_valid_entries_and_reports_the_bad_base64_one() {
    let body = push_body(decode(&datagram(0, [1, 2], Some(EUI), SPEC_RXPK)).unwrap());
    assert_eq!(body.rxpk.len(), 3);

    // The spec's first example payload uses '-' (URL-safe) next to '+'
    // (standard): it is not base64 in any alphabet, and lora_pkt_fwd's own
    // decoder rejects '-'. Only that entry is lost.
    let err = body.rxpk[0].as_ref().unwrap_err();
    assert_eq!(err.index, 0);
    assert!(matches!(err.error, FieldError::Base64(_)), "{err}");

    let fsk = body.rxpk[1].as_ref().unwrap();
    assert_eq!(fsk.datr, DataRate::Fsk { bps: 50_000 });
    assert_eq!(fsk.modulation(), Modulation::Fsk);
    assert_eq!(fsk.data, b"TEST_PACKET_1234");
    assert_eq!(fsk.freq_hz(), 869_100_000);
    assert_eq!(
        (fsk.chan, fsk.rfch, fsk.rssi, fsk.lsnr, &fsk.codr),
        (9, 1, Some(-75), None, &None)
    );

    let lora = body.rxpk[2].as_ref().unwrap();
    assert_eq!(
        lora.datr,
        DataRate::Lora {
            sf: 10,
            bw_khz: 125
        }
    );
    assert_eq!(lora.codr, Some(CodingRate::Cr47));
    assert_eq!(lora.size(), 32);
    assert_eq!(lora.tmst, 3_316_387_610);
    assert_eq!(lora.freq_hz(), 863_009_810);
    assert_eq!(lora.stat, CrcStatus::CrcOk);
    assert_eq!(lora.time.as_deref(), Some("2013-03-31T16:21:17.532038Z"));
    assert_eq!(lora.lsnr, Some(5.5));
}

#[test]
fn spec_rxpk_example_round_trips_without_its_bad_entry() {
    let packet = decode(&datagram(0, [1, 2], Some(EUI), SPEC_RXPK)).unwrap();
    let bytes = packet.to_bytes();
    assert_eq!(&bytes[..12], &datagram(0, [1, 2], Some(EUI), "")[..]);
    let again = decode(&bytes).unwrap();
    assert_eq!(again, packet.clone().without_errors());
    assert!(push_body(again.clone()).is_clean());
    assert_eq!(decode(&again.to_bytes()).unwrap(), again);

    let json = body_json(&bytes, 12);
    assert_eq!(
        json["rxpk"][0],
        json!({"tmst":3512348514u32,"time":"2013-03-31T16:21:17.530974Z","chan":9,"rfch":1,
               "freq":869.1,"stat":1,"modu":"FSK","datr":50000,"rssi":-75,"size":16,
               "data":"VEVTVF9QQUNLRVRfMTIzNA=="})
    );
    assert_eq!(json["rxpk"][1]["freq"], json!(863.00981));
    // Re-encoded with padding, as lora_pkt_fwd does.
    assert_eq!(
        json["rxpk"][1]["data"],
        "ysgRl452xNLep9S1NTIg2lomKDxUgn3DJ7DE+b00Ass="
    );
}

#[test]
fn spec_stat_example_round_trips() {
    let packet = decode(&datagram(0, [0xfe, 0xed], Some(EUI), SPEC_STAT)).unwrap();
    let body = push_body(packet.clone());
    assert!(body.rxpk.is_empty());
    let stat = body.stat().unwrap();
    assert_eq!(stat.time.as_deref(), Some("2014-01-12 08:59:28 GMT"));
    let loc = stat.location().unwrap();
    assert_eq!(
        (loc.latitude, loc.longitude, loc.altitude),
        (46.24, 3.2523, Some(145))
    );
    let c = stat.counters();
    assert_eq!(
        (
            c.rx_received,
            c.rx_ok,
            c.rx_forwarded,
            c.downlinks_received,
            c.tx_emitted
        ),
        (2, 2, 2, 2, 2)
    );
    assert_eq!(c.ack_ratio_percent, 100.0);

    let bytes = packet.to_bytes();
    assert_eq!(decode(&bytes).unwrap(), packet);
    assert_eq!(
        body_json(&bytes, 12),
        json!({"stat":{"time":"2014-01-12 08:59:28 GMT","lati":46.24,"long":3.2523,"alti":145,
                       "rxnb":2,"rxok":2,"rxfw":2,"ackr":100.0,"dwnb":2,"txnb":2}})
    );
}

#[test]
fn spec_txpk_examples_round_trip() {
    for (json, datr, codr, fdev) in [
        (
            SPEC_TXPK_LORA,
            DataRate::Lora {
                sf: 11,
                bw_khz: 125,
            },
            Some(CodingRate::Cr46),
            None,
        ),
        (
            SPEC_TXPK_FSK,
            DataRate::Fsk { bps: 50_000 },
            None,
            Some(3000),
        ),
    ] {
        let packet = decode(&datagram(3, [0x42, 0x43], None, json)).unwrap();
        let Packet::PullResp {
            token,
            body: PullRespBody { txpk },
        } = &packet
        else {
            panic!("{packet:?}")
        };
        assert_eq!(*token, Token(0x4243));
        assert!(txpk.imme);
        assert_eq!((txpk.datr, &txpk.codr, txpk.fdev), (datr, &codr, fdev));
        assert_eq!(txpk.powe, Some(if fdev.is_some() { 12 } else { 14 }));
        // 43 characters without padding: 32 bytes (the last character has
        // unused bits set, which lora_pkt_fwd also ignores).
        assert_eq!(txpk.size(), 32);
        assert!(!txpk.ipol);

        let bytes = packet.to_bytes();
        assert_eq!(&bytes[..4], &[2, 0x42, 0x43, 3]);
        assert_eq!(decode(&bytes).unwrap(), packet);
        let out = body_json(&bytes, 4);
        let src: Value = serde_json::from_str(json).unwrap();
        for key in [
            "imme", "freq", "rfch", "powe", "modu", "datr", "codr", "fdev", "size",
        ] {
            assert_eq!(out["txpk"][key], src["txpk"][key], "{key}");
        }
    }
}

#[test]
fn acks_are_byte_exact_headers_echoing_the_token() {
    let token = Token(0xBEEF);
    assert_eq!(Packet::PushAck { token }.to_bytes(), [2, 0xBE, 0xEF, 0x01]);
    assert_eq!(Packet::PullAck { token }.to_bytes(), [2, 0xBE, 0xEF, 0x04]);
    assert_eq!(
        Packet::PullData {
            token,
            gateway: Eui(EUI)
        }
        .to_bytes(),
        [2, 0xBE, 0xEF, 0x02, 0xAA, 0x55, 0x5A, 0, 0, 0, 1, 1]
    );
    assert_eq!(
        Packet::TxAck {
            token,
            gateway: Eui(EUI),
            body: None
        }
        .to_bytes(),
        [2, 0xBE, 0xEF, 0x05, 0xAA, 0x55, 0x5A, 0, 0, 0, 1, 1]
    );

    let push = decode(&datagram(0, [0xBE, 0xEF], Some(EUI), SPEC_STAT)).unwrap();
    assert_eq!(push.ack().unwrap().to_bytes(), [2, 0xBE, 0xEF, 0x01]);
    let pull = decode(&[2, 0xBE, 0xEF, 2, 0xAA, 0x55, 0x5A, 0, 0, 0, 1, 1]).unwrap();
    assert_eq!(
        pull,
        Packet::PullData {
            token,
            gateway: Eui(EUI)
        }
    );
    assert_eq!(pull.gateway().unwrap().to_string(), "AA555A0000000101");
    assert_eq!(pull.ack().unwrap().to_bytes(), [2, 0xBE, 0xEF, 0x04]);
    assert_eq!(
        decode(&[2, 0xBE, 0xEF, 1]).unwrap(),
        Packet::PushAck { token }
    );
    assert_eq!(
        decode(&[2, 0xBE, 0xEF, 4]).unwrap(),
        Packet::PullAck { token }
    );
    assert!(Packet::PushAck { token }.ack().is_none());
}

#[test]
fn version_1_gateways_are_answered_in_version_1() {
    let pull = [1, 0x00, 0x07, 2, 0xAA, 0x55, 0x5A, 0, 0, 0, 1, 1];
    let d = Datagram::decode(&pull).unwrap();
    assert_eq!(d.version, ProtocolVersion::V1);
    assert_eq!(d.to_bytes(), pull);
    assert_eq!(d.ack().unwrap().to_bytes(), [1, 0x00, 0x07, 4]);
    // Packet::encode always writes version 2.
    assert_eq!(d.packet.ack().unwrap().to_bytes(), [2, 0x00, 0x07, 4]);
}

/// A PUSH_DATA exactly as packet_forwarder v4.0.1 (SX1301) formats it:
/// field order and number formats (`%.6lf` freq, `%.1f` lsnr, `%.0f` rssi)
/// from its snprintf calls, the rxpk array then the status report.
#[test]
fn lora_pkt_fwd_sx1301_push_data_decodes() {
    let json = concat!(
        r#"{"rxpk":[{"tmst":3512348611,"time":"2024-05-01T10:00:00.528002Z","tmms":1398506418528,"#,
        r#""chan":2,"rfch":0,"freq":868.100000,"stat":1,"modu":"LORA","datr":"SF12BW125","codr":"4/5","#,
        r#""lsnr":-11.8,"rssi":-119,"size":23,"data":"AMCwoAAAAAABNBIA0H7Vs3AqUZ7TofA="}],"#,
        r#""stat":{"time":"2024-05-01 10:00:00 GMT","lati":46.24000,"long":3.25230,"alti":145,"#,
        r#""rxnb":1,"rxok":1,"rxfw":1,"ackr":100.0,"dwnb":0,"txnb":0}}"#
    );
    let bytes = datagram(0, [0x5A, 0x3C], Some(EUI), json);
    let packet = decode(&bytes).unwrap();
    assert_eq!(packet.token(), Token(0x5A3C));
    assert_eq!(packet.gateway(), Some(Eui(EUI)));
    let body = push_body(packet.clone());
    assert!(body.is_clean());
    let rx = body.packets().next().unwrap();
    assert_eq!(rx.freq_hz(), 868_100_000);
    assert_eq!(rx.datr.to_string(), "SF12BW125");
    assert_eq!(rx.tmms, Some(1_398_506_418_528));
    assert_eq!((rx.rssi_dbm(), rx.snr_db()), (Some(-119), Some(-11.8)));
    assert_eq!(rx.data.len(), 23);
    assert_eq!(rx.data[0], 0x00, "join-request MHDR");
    assert_eq!(body.stat().unwrap().rxnb, Some(1));

    // Re-encoding keeps lora_pkt_fwd's field order.
    let out = String::from_utf8(packet.to_bytes()[12..].to_vec()).unwrap();
    assert!(out.starts_with(r#"{"rxpk":[{"tmst":3512348611,"time":"2024-05-01T10:00:00.528002Z","tmms":1398506418528,"chan":2,"rfch":0,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF12BW125","codr":"4/5","lsnr":-11.8,"rssi":-119,"size":23,"data":"AMCwoAAAAAABNBIA0H7Vs3AqUZ7TofA="}],"stat":{"#), "{out}");
    assert_eq!(decode(&packet.to_bytes()).unwrap(), packet);
}

/// The SX1302 HAL's lora_pkt_fwd adds `jver`, `mid`, `rssis`, `foff` to each
/// rxpk, sends several per datagram, and `temp` in `stat`; SF5/SF6 exist.
#[test]
fn lora_pkt_fwd_sx1302_push_data_with_extra_fields_decodes() {
    let json = concat!(
        r#"{"rxpk":[{"jver":1,"tmst":1120340,"chan":0,"rfch":1,"freq":868.100000,"mid": 8,"stat":1,"#,
        r#""modu":"LORA","datr":"SF7BW125","codr":"4/5","rssis":-52,"lsnr":13.2,"foff":-241,"rssi":-51,"#,
        r#""size":15,"data":"QPF9vkkAAgABAaGyw9Tl"},{"jver":1,"tmst":1150412,"chan":3,"rfch":0,"#,
        r#""freq":867.100000,"mid": 0,"stat":-1,"modu":"LORA","datr":"SF5BW250","codr":"4/5","rssis":-118,"#,
        r#""lsnr":-6.0,"foff":12,"rssi":-104,"size":14,"data":"gPF9vkmAAwACehEiM0Q="}],"#,
        r#""stat":{"time":"2024-05-01 10:00:30 UTC","rxnb":2,"rxok":1,"rxfw":2,"ackr":0.0,"dwnb":0,"txnb":0,"temp":31.5}}"#
    );
    let body = push_body(decode(&datagram(0, [0, 1], Some(EUI), json)).unwrap());
    assert!(
        body.is_clean(),
        "{:?}",
        body.rxpk_errors().collect::<Vec<_>>()
    );
    let rx: Vec<&RxPk> = body.packets().collect();
    assert_eq!(rx.len(), 2);
    assert_eq!(
        rx[0].data,
        [0x40, 0xf1, 0x7d, 0xbe, 0x49, 0, 2, 0, 1, 1, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5]
    );
    assert_eq!(rx[1].stat, CrcStatus::CrcBad);
    assert_eq!(rx[1].datr, DataRate::Lora { sf: 5, bw_khz: 250 });
    assert_eq!(rx[1].freq_hz(), 867_100_000);
    let stat = body.stat().unwrap();
    assert_eq!(stat.temp, Some(31.5));
    assert_eq!(stat.location(), None);
}

/// A Kerlink iFemtoCell's TX_ACK as logged in helium/semtech-udp issue #68:
/// no JSON, but a C string terminator sent along.
#[test]
fn tx_ack_with_a_trailing_nul_means_accepted() {
    let bytes = [2, 139, 165, 5, 114, 118, 255, 0, 57, 3, 0, 174, 0];
    let packet = decode(&bytes).unwrap();
    assert_eq!(
        packet,
        Packet::TxAck {
            token: Token::from_bytes([139, 165]),
            gateway: "7276FF00390300AE".parse().unwrap(),
            body: None
        }
    );
}

#[test]
fn tx_ack_errors_and_warnings_are_typed() {
    for (json, status) in [
        ("NONE", TxAckStatus::None),
        ("TOO_LATE", TxAckStatus::TooLate),
        ("TOO_EARLY", TxAckStatus::TooEarly),
        ("COLLISION_PACKET", TxAckStatus::CollisionPacket),
        ("COLLISION_BEACON", TxAckStatus::CollisionBeacon),
        ("TX_FREQ", TxAckStatus::TxFreq),
        ("TX_POWER", TxAckStatus::TxPower),
        ("GPS_UNLOCKED", TxAckStatus::GpsUnlocked),
        ("UNKNOWN", TxAckStatus::Other("UNKNOWN".into())),
    ] {
        let text = format!(r#"{{"txpk_ack":{{"error":"{json}"}}}}"#);
        let packet = decode(&datagram(5, [9, 9], Some(EUI), &text)).unwrap();
        let Packet::TxAck {
            body: Some(body), ..
        } = &packet
        else {
            panic!("{packet:?}")
        };
        assert_eq!(body.error.as_ref(), Some(&status));
        assert_eq!(body.is_accepted(), status == TxAckStatus::None);
        assert_eq!(status.to_string(), json);
        assert_eq!(decode(&packet.to_bytes()).unwrap(), packet);
        assert_eq!(&packet.to_bytes()[12..], text.as_bytes());
    }

    // SX1302 forwarders: sent, but at another power.
    let text = r#"{"txpk_ack":{"warn":"TX_POWER","value":14}}"#;
    let packet = decode(&datagram(5, [9, 9], Some(EUI), text)).unwrap();
    let Packet::TxAck {
        body: Some(body), ..
    } = &packet
    else {
        panic!("{packet:?}")
    };
    assert_eq!(
        body,
        &TxAckBody {
            error: None,
            warn: Some(TxAckStatus::TxPower),
            value: Some(14)
        }
    );
    assert!(body.is_accepted());
    assert_eq!(&packet.to_bytes()[12..], text.as_bytes());
}

#[test]
fn class_a_downlink_builder_sets_lorawan_defaults() {
    let payload = vec![0x60, 1, 2, 3, 4, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
    let dr = DataRate::lora(9, 125).unwrap();
    let txpk = TxPk::lorawan_class_a(1_000_000 + 1_000_000, 868.1, dr, 14, payload.clone());
    assert!(txpk.ipol && !txpk.imme && !txpk.ncrc);
    assert_eq!(
        (txpk.rfch, txpk.codr.clone(), txpk.powe, txpk.size()),
        (0, Some(CodingRate::Cr45), Some(14), 12)
    );
    assert_eq!(txpk.freq_hz(), 868_100_000);

    let packet = Packet::PullResp {
        token: Token(7),
        body: txpk.into(),
    };
    let bytes = packet.to_bytes();
    assert_eq!(
        body_json(&bytes, 4),
        json!({"txpk":{"imme":false,"tmst":2000000,"freq":868.1,"rfch":0,"powe":14,"modu":"LORA",
                       "datr":"SF9BW125","codr":"4/5","ipol":true,"size":12,"data":"YAECAwQAAADerb7v"}})
    );
    assert_eq!(decode(&bytes).unwrap(), packet);

    let fsk = TxPk::lorawan_class_a(5, 868.8, DataRate::Fsk { bps: 50_000 }, 14, payload);
    assert_eq!(
        (&fsk.codr, fsk.fdev, fsk.ipol, fsk.modulation()),
        (&None, Some(25_000), false, Modulation::Fsk)
    );

    let mut hz = TxPk::lorawan_class_a(5, 0.0, dr, 14, []);
    hz.set_freq_hz(512_000_200);
    assert_eq!((1e6 * hz.freq) as u32, 512_000_200);
}

#[test]
fn push_body_constructors_encode_what_they_hold() {
    let stat = Stat {
        rxnb: Some(3),
        ..Stat::default()
    };
    let p = Packet::PushData {
        token: Token(1),
        gateway: Eui(EUI),
        body: PushBody::from_stat(stat),
    };
    assert_eq!(body_json(&p.to_bytes(), 12), json!({"stat":{"rxnb":3}}));
    let empty = Packet::PushData {
        token: Token(1),
        gateway: Eui(EUI),
        body: PushBody::default(),
    };
    assert_eq!(&empty.to_bytes()[12..], b"{}");
    assert_eq!(decode(&empty.to_bytes()).unwrap(), empty);
}
