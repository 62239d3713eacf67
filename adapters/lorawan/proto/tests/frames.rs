//! Frame-level behaviour against fixed vectors from independent sources
//! and against frames built by the `lorawan` crate as a device would.
//!
//! Vectors: lora-packet's README example (MIC and decryption of a real
//! uplink), and `tests/vectors/gen_vectors.py` (an independent Python
//! implementation of the LoRaWAN 1.0.x crypto on the `cryptography`
//! package) for joins, 32-bit counters, FPort 0 and downlinks.

mod common;

use std::collections::BTreeSet;

use common::{join_request, uplink, RawMac, Up};
use gatewayd_lorawan_proto::{
    build_data_downlink, decode_cayenne, handle_join_request, process_data_uplink, DataDown,
    DevAddr, DownlinkError, Eui64, JoinError, JoinParams, MacDown, MacParseStop, MacUp, MaxPayload,
    Region, Session, UplinkError,
};
use lorawan::keys::{AppKey, AES128};
use lorawan::parser::{
    DataHeader, DecryptedJoinAcceptPayload, DevNonce, EncryptedDataPayload, FRMPayload,
};

#[rustfmt::skip]
mod vectors {
    // Output of tests/vectors/gen_vectors.py.
    pub const JOIN_REQUEST: [u8; 23] = [0x00, 0x00, 0x00, 0x00, 0xD0, 0x7E, 0xD5, 0xB3, 0x70, 0x30, 0x05, 0x1C, 0x00, 0x0B, 0xA3, 0x04, 0x00, 0x34, 0x12, 0xE7, 0xBE, 0xEF, 0x69];
    pub const JOIN_ACCEPT: [u8; 17] = [0x20, 0x40, 0x98, 0x03, 0xB3, 0xE1, 0xD7, 0x53, 0x30, 0x02, 0x45, 0x01, 0x96, 0x37, 0x64, 0xAC, 0x40];
    pub const JOIN_NWK_S_KEY: [u8; 16] = [0x56, 0x5C, 0xA5, 0x21, 0xF2, 0xF7, 0xB4, 0x39, 0x17, 0x52, 0xB7, 0x29, 0x00, 0x06, 0x00, 0xA0];
    pub const JOIN_APP_S_KEY: [u8; 16] = [0x57, 0x63, 0x52, 0xD4, 0xE8, 0x53, 0x03, 0x78, 0x74, 0x72, 0xD9, 0xD8, 0xD7, 0x42, 0x3E, 0xFD];
    pub const UPLINK_CONFIRMED_FOPTS: [u8; 23] = [0x80, 0xDA, 0x1B, 0x01, 0x26, 0x82, 0x05, 0x00, 0x02, 0x0D, 0x0A, 0x84, 0x0E, 0x64, 0x75, 0x17, 0x36, 0x93, 0x68, 0x91, 0xDD, 0xC4, 0xD4];
    pub const UPLINK_FOPTS_AND_FPORT0: [u8; 15] = [0x40, 0xDA, 0x1B, 0x01, 0x26, 0x01, 0x08, 0x00, 0x02, 0x00, 0xAB, 0xC4, 0x6B, 0x8E, 0xB7];
    pub const UPLINK_FPORT0: [u8; 17] = [0x40, 0xDA, 0x1B, 0x01, 0x26, 0x00, 0x07, 0x00, 0x00, 0x41, 0x47, 0x37, 0xB3, 0x3F, 0x8E, 0x88, 0xB9];
    pub const DOWNLINK_ACK_MAC_APP: [u8; 24] = [0x60, 0xDA, 0x1B, 0x01, 0x26, 0x29, 0x07, 0x00, 0x02, 0x0C, 0x03, 0x0D, 0x92, 0xD2, 0x88, 0x4C, 0x80, 0x05, 0xF7, 0xCD, 0x2F, 0x2E, 0x8A, 0x51];
    pub const NWK: [u8; 16] = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F];
    pub const APP: [u8; 16] = [0x0F, 0x0E, 0x0D, 0x0C, 0x0B, 0x0A, 0x09, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x00];
    pub const APP_KEY: [u8; 16] = [0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF, 0x4F, 0x3C];
}

fn session(dev_addr: u32, nwk: [u8; 16], app: [u8; 16]) -> Session {
    Session::abp(DevAddr(dev_addr), nwk, app, Region::Eu868)
}

fn key16(hex_str: &str) -> [u8; 16] {
    common::unhex(hex_str).try_into().unwrap()
}

// ---------------------------------------------------------------------------
// Uplink: MIC, decryption, counters
// ---------------------------------------------------------------------------

/// lora-packet README: `40F17DBE4900020001954378762B11FF0D` with
/// NwkSKey 44024241…3fd3 and AppSKey ec925802…c588 is "test" on FPort 1,
/// FCnt 2, DevAddr 49BE7DF1.
#[test]
fn lora_packet_readme_uplink_verifies_and_decrypts() {
    let phy = common::unhex("40F17DBE4900020001954378762B11FF0D");
    let mut s = session(
        0x49BE_7DF1,
        key16("44024241ed4ce9a68c6a8bc055233fd3"),
        key16("ec925802ae430ca77fd3dd73cb2cc588"),
    );
    let up = process_data_uplink(&mut s, &phy).unwrap();
    assert_eq!(up.payload, b"test");
    assert_eq!(up.fport, Some(1));
    assert_eq!(up.fcnt32, 2);
    assert_eq!(up.dev_addr, DevAddr(0x49BE_7DF1));
    assert!(!up.confirmed && !up.ack_bit && !up.adr && !up.retransmission);
    assert_eq!(up.mic, [0x2B, 0x11, 0xFF, 0x0D]);
    assert_eq!(s.fcnt_up, Some(2));
}

#[test]
fn wrong_nwk_s_key_fails_the_mic_and_leaves_the_session_unchanged() {
    let phy = common::unhex("40F17DBE4900020001954378762B11FF0D");
    let mut s = session(
        0x49BE_7DF1,
        [0; 16],
        key16("ec925802ae430ca77fd3dd73cb2cc588"),
    );
    let before = s.clone();
    assert_eq!(process_data_uplink(&mut s, &phy), Err(UplinkError::Mic));
    assert_eq!(s, before);
}

#[test]
fn any_flipped_bit_fails_the_mic() {
    let phy = common::unhex("40F17DBE4900020001954378762B11FF0D");
    let nwk = key16("44024241ed4ce9a68c6a8bc055233fd3");
    let app = key16("ec925802ae430ca77fd3dd73cb2cc588");
    // From byte 5 (FCtrl) on: flipping DevAddr bits is a different device,
    // flipping MHDR bits a different message type.
    for byte in 5..phy.len() {
        for bit in 0..8 {
            let mut bad = phy.clone();
            bad[byte] ^= 1 << bit;
            let mut s = session(0x49BE_7DF1, nwk, app);
            let r = process_data_uplink(&mut s, &bad);
            assert!(r.is_err(), "byte {byte} bit {bit} accepted");
            assert_eq!(s.fcnt_up, None);
        }
    }
}

#[test]
fn wrong_dev_addr_is_not_this_session() {
    let phy = common::unhex("40F17DBE4900020001954378762B11FF0D");
    let mut s = session(0x0102_0304, [0; 16], [0; 16]);
    assert_eq!(
        process_data_uplink(&mut s, &phy),
        Err(UplinkError::WrongDevAddr {
            expected: DevAddr(0x0102_0304),
            got: DevAddr(0x49BE_7DF1)
        })
    );
}

#[test]
fn mic_uses_the_reconstructed_32_bit_counter() {
    // Python vector: confirmed uplink, FCnt 0x10005 (16 bits on air: 5),
    // FOpts LinkCheckReq + DeviceTimeReq, FPort 10, Cayenne payload.
    let phy = vectors::UPLINK_CONFIRMED_FOPTS;
    let mut s = session(0x2601_1BDA, vectors::NWK, vectors::APP);
    // Without history the counter is taken as 5: the MIC cannot match.
    assert_eq!(
        process_data_uplink(&mut s.clone(), &phy),
        Err(UplinkError::Mic)
    );
    s.fcnt_up = Some(0xFFF0);
    let up = process_data_uplink(&mut s, &phy).unwrap();
    assert_eq!(up.fcnt32, 0x1_0005);
    assert!(up.confirmed && up.adr);
    assert_eq!(up.fport, Some(10));
    assert_eq!(
        up.mac_commands,
        vec![MacUp::LinkCheckReq, MacUp::DeviceTimeReq]
    );
    assert_eq!(up.mac_stop, None);
    let m = decode_cayenne(&up.payload).unwrap();
    assert_eq!(m[0].name, "temperature_3");
    assert_eq!(m[0].value, 27.2);
    assert_eq!(m[1].name, "temperature_5");
    assert_eq!(m[1].value, 25.5);
    assert_eq!(s.fcnt_up, Some(0x1_0005));
}

#[test]
fn fport_0_payload_is_decrypted_with_the_nwk_s_key_and_parsed_as_mac() {
    let mut s = session(0x2601_1BDA, vectors::NWK, vectors::APP);
    let up = process_data_uplink(&mut s, &vectors::UPLINK_FPORT0).unwrap();
    assert_eq!(up.fport, Some(0));
    assert_eq!(up.payload, [0x02, 0x06, 0xFE, 0x3F]);
    assert_eq!(
        up.mac_commands,
        vec![
            MacUp::LinkCheckReq,
            MacUp::DevStatusAns {
                battery: 0xFE,
                margin: -1
            }
        ]
    );
    // With a wrong AppSKey the result is the same: FPort 0 never uses it.
    let mut s = session(0x2601_1BDA, vectors::NWK, [0xEE; 16]);
    assert_eq!(
        process_data_uplink(&mut s, &vectors::UPLINK_FPORT0)
            .unwrap()
            .payload,
        [0x02, 0x06, 0xFE, 0x3F]
    );
}

#[test]
fn mac_commands_in_fopts_are_parsed_and_unknown_ones_stop_parsing() {
    let phy = uplink(&Up {
        fcnt: 1,
        mac: vec![
            RawMac(0x02, vec![]),
            RawMac(0x03, vec![0x07]),
            RawMac(0x0D, vec![]),
            RawMac(0x42, vec![1, 2]),
        ],
        fport: Some(2),
        payload: b"x",
        ..Up::default()
    });
    let mut s = session(0x2601_1BDA, [0x11; 16], [0x22; 16]);
    let up = process_data_uplink(&mut s, &phy).unwrap();
    assert_eq!(
        up.mac_commands,
        vec![
            MacUp::LinkCheckReq,
            MacUp::Other {
                cid: 3,
                payload: vec![7]
            },
            MacUp::DeviceTimeReq
        ]
    );
    assert_eq!(
        up.mac_stop,
        Some(MacParseStop::Unknown {
            cid: 0x42,
            offset: 4
        })
    );
    assert_eq!(up.payload, b"x", "the frame is still accepted");
}

#[test]
fn fopts_with_fport_0_is_refused_after_authentication() {
    let mut s = session(0x2601_1BDA, vectors::NWK, vectors::APP);
    let before = s.clone();
    assert_eq!(
        process_data_uplink(&mut s, &vectors::UPLINK_FOPTS_AND_FPORT0),
        Err(UplinkError::MacInFoptsAndPayload)
    );
    assert_eq!(s, before);
    let mut s = session(0x2601_1BDA, [0; 16], vectors::APP);
    assert_eq!(
        process_data_uplink(&mut s, &vectors::UPLINK_FOPTS_AND_FPORT0),
        Err(UplinkError::Mic),
        "MIC first"
    );
}

fn abp_up(fcnt: u32, confirmed: bool, payload: &[u8]) -> Vec<u8> {
    uplink(&Up {
        fcnt,
        confirmed,
        payload,
        ..Up::default()
    })
}

#[test]
fn fcnt_wraps_at_65535_into_the_next_block() {
    let mut s = session(0x2601_1BDA, [0x11; 16], [0x22; 16]);
    s.fcnt_up = Some(65_534);
    for f in [65_535u32, 65_536, 65_537] {
        let up = process_data_uplink(&mut s, &abp_up(f, false, b"p")).unwrap();
        assert_eq!(up.fcnt32, f);
        assert_eq!(up.payload, b"p", "decrypted with the full counter");
    }
    assert_eq!(s.fcnt_up, Some(65_537));
}

#[test]
fn fcnt_gap_beyond_max_fcnt_gap_is_rejected() {
    let mut s = session(0x2601_1BDA, [0x11; 16], [0x22; 16]);
    s.fcnt_up = Some(10);
    assert_eq!(
        process_data_uplink(&mut s, &abp_up(10 + 16_385, false, b"")),
        Err(UplinkError::FcntGap {
            last: 10,
            fcnt: 10 + 16_385
        })
    );
    assert_eq!(
        process_data_uplink(&mut s, &abp_up(10 + 16_384, false, b""))
            .unwrap()
            .fcnt32,
        10 + 16_384
    );
}

#[test]
fn replayed_older_frame_is_rejected_as_replay() {
    let mut s = session(0x2601_1BDA, [0x11; 16], [0x22; 16]);
    let old = abp_up(3, false, b"a");
    process_data_uplink(&mut s, &old).unwrap();
    process_data_uplink(&mut s, &abp_up(4, false, b"b")).unwrap();
    assert_eq!(
        process_data_uplink(&mut s, &old),
        Err(UplinkError::Replay { last: 4, fcnt: 3 })
    );
    assert_eq!(s.fcnt_up, Some(4));
}

#[test]
fn unconfirmed_repetition_with_the_same_fcnt_is_dropped() {
    let mut s = session(0x2601_1BDA, [0x11; 16], [0x22; 16]);
    let f = abp_up(9, false, b"a");
    process_data_uplink(&mut s, &f).unwrap();
    assert_eq!(
        process_data_uplink(&mut s, &f),
        Err(UplinkError::Repeated { fcnt: 9 })
    );
}

#[test]
fn identical_confirmed_retransmission_is_accepted_for_re_ack_without_moving_counters() {
    let mut s = session(0x2601_1BDA, [0x11; 16], [0x22; 16]);
    let f = abp_up(9, true, b"a");
    let first = process_data_uplink(&mut s, &f).unwrap();
    assert!(!first.retransmission);
    let after_first = s.clone();
    let again = process_data_uplink(&mut s, &f).unwrap();
    assert!(again.retransmission && again.confirmed);
    assert_eq!(s, after_first);
    // Different content under the same counter is not a retransmission.
    assert_eq!(
        process_data_uplink(&mut s, &abp_up(9, true, b"b")),
        Err(UplinkError::Repeated { fcnt: 9 })
    );
}

#[test]
fn counter_errors_are_reported_only_for_authenticated_frames() {
    let mut s = session(0x2601_1BDA, [0x11; 16], [0x22; 16]);
    s.fcnt_up = Some(100);
    let forged = uplink(&Up {
        fcnt: 50,
        nwk: [0x99; 16],
        ..Up::default()
    });
    assert_eq!(process_data_uplink(&mut s, &forged), Err(UplinkError::Mic));
    let forged_gap = uplink(&Up {
        fcnt: 30_000,
        nwk: [0x99; 16],
        ..Up::default()
    });
    assert_eq!(
        process_data_uplink(&mut s, &forged_gap),
        Err(UplinkError::Mic)
    );
}

#[test]
fn downlink_types_and_short_frames_are_not_data_uplinks() {
    let mut s = session(0x2601_1BDA, [0x11; 16], [0x22; 16]);
    let mut down = abp_up(1, false, b"");
    down[0] = 0x60;
    assert_eq!(
        process_data_uplink(&mut s, &down),
        Err(UplinkError::NotDataUplink(0b011))
    );
    assert!(matches!(
        process_data_uplink(&mut s, &[0x40; 11]),
        Err(UplinkError::Malformed(_))
    ));
    assert_eq!(
        process_data_uplink(&mut s, &[0x41; 20]),
        Err(UplinkError::UnsupportedMajor)
    );
    // FOptsLen 15 but only 3 bytes after FCnt.
    let mut f = abp_up(1, false, b"");
    f[5] = 0x0F;
    assert!(matches!(
        process_data_uplink(&mut s, &f),
        Err(UplinkError::Malformed(_))
    ));
}

// ---------------------------------------------------------------------------
// Join
// ---------------------------------------------------------------------------

const JOIN_EUI: Eui64 = Eui64([0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0x00, 0x00, 0x00]);
const DEV_EUI: Eui64 = Eui64([0x00, 0x04, 0xA3, 0x0B, 0x00, 0x1C, 0x05, 0x30]);

fn params() -> JoinParams {
    JoinParams {
        dev_addr: DevAddr(0x00AB_CDEF),
        join_nonce: 1,
        net_id: 0,
        rx1_dr_offset: 0,
        rx2_dr: 0,
        rx1_delay_s: 1,
    }
}

#[test]
fn join_request_vector_gives_the_independent_join_accept_and_keys() {
    // The device side of the vector, built with the crate, is the same frame.
    assert_eq!(
        join_request(JOIN_EUI, DEV_EUI, 0x1234, vectors::APP_KEY),
        vectors::JOIN_REQUEST
    );
    let j = handle_join_request(
        &vectors::JOIN_REQUEST,
        JOIN_EUI,
        &vectors::APP_KEY,
        &BTreeSet::new(),
        &params(),
    )
    .unwrap();
    assert_eq!(j.request.dev_eui, DEV_EUI);
    assert_eq!(j.request.dev_nonce, 0x1234);
    assert_eq!(j.join_accept, vectors::JOIN_ACCEPT);
    assert_eq!(j.session.nwk_s_key, vectors::JOIN_NWK_S_KEY);
    assert_eq!(j.session.app_s_key, vectors::JOIN_APP_S_KEY);
    assert_eq!(j.session.dev_addr, 0x00AB_CDEF);
    assert_eq!(j.session.fcnt_up, None);
    assert_eq!(j.session.fcnt_down, 0);
    assert_eq!(j.session.used_dev_nonces, BTreeSet::from([0x1234]));
}

#[test]
fn join_accept_decrypts_and_verifies_on_the_device_side() {
    let key = [0x5A; 16];
    let jr = join_request(JOIN_EUI, DEV_EUI, 0xBEEF, key);
    let p = JoinParams {
        dev_addr: DevAddr(0x0123_4567),
        join_nonce: 0x00AB_CDEF,
        net_id: 0x00_0013,
        rx1_dr_offset: 2,
        rx2_dr: 3,
        rx1_delay_s: 5,
    };
    let j = handle_join_request(&jr, JOIN_EUI, &key, &BTreeSet::new(), &p).unwrap();
    // The device: decrypt, check MIC, read fields, derive keys.
    let app_key = AppKey::from(key);
    let ja = DecryptedJoinAcceptPayload::new(j.join_accept.clone(), &app_key).unwrap();
    assert_eq!(
        u32::from_le_bytes(ja.dev_addr().as_ref().try_into().unwrap()),
        0x0123_4567
    );
    assert_eq!(ja.app_nonce().as_ref(), &[0xEF, 0xCD, 0xAB]);
    assert_eq!(ja.net_id().as_ref(), &[0x13, 0x00, 0x00]);
    assert_eq!(ja.dl_settings().rx1_dr_offset(), 2);
    assert_eq!(ja.dl_settings().rx2_data_rate(), 3);
    assert_eq!(ja.rx_delay(), 5);
    assert!(ja.c_f_list().is_none());
    let nonce = DevNonce::from(0xBEEFu16.to_le_bytes());
    assert_eq!(
        ja.derive_newskey(&nonce, &app_key).as_ref(),
        &j.session.nwk_s_key
    );
    assert_eq!(
        ja.derive_appskey(&nonce, &app_key).as_ref(),
        &j.session.app_s_key
    );
    assert_eq!(
        (
            j.session.rx1_dr_offset,
            j.session.rx2_dr,
            j.session.rx1_delay_s
        ),
        (2, 3, 5)
    );
    // A wrong key does not verify.
    assert!(DecryptedJoinAcceptPayload::new(j.join_accept, &AppKey::from([0; 16])).is_err());
}

#[test]
fn reused_dev_nonce_is_refused() {
    let used = BTreeSet::from([0x0001, 0x1234]);
    assert_eq!(
        handle_join_request(
            &vectors::JOIN_REQUEST,
            JOIN_EUI,
            &vectors::APP_KEY,
            &used,
            &params()
        ),
        Err(JoinError::DevNonceReused { dev_nonce: 0x1234 })
    );
}

#[test]
fn join_request_with_the_wrong_app_key_or_join_eui_is_refused() {
    assert_eq!(
        handle_join_request(
            &vectors::JOIN_REQUEST,
            JOIN_EUI,
            &[0; 16],
            &BTreeSet::new(),
            &params()
        ),
        Err(JoinError::Mic)
    );
    let other = Eui64::from(1);
    assert_eq!(
        handle_join_request(
            &vectors::JOIN_REQUEST,
            other,
            &vectors::APP_KEY,
            &BTreeSet::new(),
            &params()
        ),
        Err(JoinError::JoinEuiMismatch {
            expected: other,
            got: JOIN_EUI
        })
    );
    // Nonce reuse is only checked for authenticated requests.
    let used = BTreeSet::from([0x1234]);
    assert_eq!(
        handle_join_request(&vectors::JOIN_REQUEST, JOIN_EUI, &[0; 16], &used, &params()),
        Err(JoinError::Mic)
    );
    assert_eq!(
        handle_join_request(
            &vectors::JOIN_REQUEST[..22],
            JOIN_EUI,
            &vectors::APP_KEY,
            &used,
            &params()
        ),
        Err(JoinError::NotJoinRequest)
    );
    let bad = JoinParams {
        join_nonce: 1 << 24,
        ..params()
    };
    assert!(matches!(
        handle_join_request(
            &vectors::JOIN_REQUEST,
            JOIN_EUI,
            &vectors::APP_KEY,
            &BTreeSet::new(),
            &bad
        ),
        Err(JoinError::InvalidParams(_))
    ));
}

// ---------------------------------------------------------------------------
// Downlink
// ---------------------------------------------------------------------------

const EU_DR5: MaxPayload = MaxPayload { m: 250, n: 242 };

#[test]
fn downlink_with_ack_mac_answers_and_payload_matches_the_independent_vector() {
    let mut s = session(0x2601_1BDA, vectors::NWK, vectors::APP);
    s.fcnt_down = 7;
    let mac = [
        MacDown::LinkCheckAns {
            margin: 12,
            gw_cnt: 3,
        },
        MacDown::DeviceTimeAns {
            gps_seconds: 1_284_035_218,
            fraction: 128,
        },
    ];
    let phy = build_data_downlink(
        &mut s,
        &DataDown {
            confirmed: false,
            ack: true,
            f_pending: false,
            mac: &mac,
            app: Some((5, b"hi")),
        },
        EU_DR5,
    )
    .unwrap();
    assert_eq!(phy, vectors::DOWNLINK_ACK_MAC_APP);
    assert_eq!(s.fcnt_down, 8);
}

#[test]
fn downlink_decrypts_on_the_device_side() {
    let mut s = session(0x2601_1BDA, [0x11; 16], [0x22; 16]);
    s.fcnt_down = 0x1_0002;
    let phy = build_data_downlink(
        &mut s,
        &DataDown {
            confirmed: true,
            ack: false,
            f_pending: true,
            mac: &[],
            app: Some((42, b"open valve")),
        },
        EU_DR5,
    )
    .unwrap();
    let frame = EncryptedDataPayload::new(phy).unwrap();
    assert!(frame.validate_mic(&AES128([0x11; 16]), 0x1_0002));
    assert!(frame.is_confirmed() && !frame.is_uplink());
    assert!(frame.fhdr().fctrl().f_pending() && !frame.fhdr().fctrl().ack());
    let dec = frame
        .decrypt(
            Some(&AES128([0x11; 16])),
            Some(&AES128([0x22; 16])),
            0x1_0002,
        )
        .unwrap();
    assert_eq!(dec.f_port(), Some(42));
    assert_eq!(dec.frm_payload(), FRMPayload::Data(b"open valve"));
}

#[test]
fn mac_answers_too_long_for_fopts_go_in_an_fport_0_payload() {
    let mut s = session(0x2601_1BDA, [0x11; 16], [0x22; 16]);
    let t = MacDown::DeviceTimeAns {
        gps_seconds: 1,
        fraction: 2,
    };
    let phy = build_data_downlink(
        &mut s,
        &DataDown {
            mac: &[t, t, t],
            ..DataDown::default()
        },
        EU_DR5,
    )
    .unwrap();
    let frame = EncryptedDataPayload::new(phy).unwrap();
    assert_eq!(frame.fhdr().fopts_len(), 0);
    let dec = frame.decrypt(Some(&AES128([0x11; 16])), None, 0).unwrap();
    assert_eq!(dec.f_port(), Some(0));
    match dec.frm_payload() {
        FRMPayload::MACCommands(m) => assert_eq!(
            m.data(),
            [t.to_bytes(), t.to_bytes(), t.to_bytes()].concat()
        ),
        other => panic!("{other:?}"),
    }
    // With an application payload they cannot go anywhere.
    assert_eq!(
        build_data_downlink(
            &mut s,
            &DataDown {
                mac: &[t, t, t],
                app: Some((1, b"")),
                ..DataDown::default()
            },
            EU_DR5
        ),
        Err(DownlinkError::MacTooLong(18))
    );
}

#[test]
fn downlink_size_fport_and_counter_limits() {
    let mut s = session(0x2601_1BDA, [0x11; 16], [0x22; 16]);
    let small = MaxPayload { m: 59, n: 51 };
    assert!(build_data_downlink(
        &mut s,
        &DataDown {
            app: Some((1, &[0; 51])),
            ..DataDown::default()
        },
        small
    )
    .is_ok());
    assert_eq!(
        build_data_downlink(
            &mut s,
            &DataDown {
                app: Some((1, &[0; 52])),
                ..DataDown::default()
            },
            small
        ),
        Err(DownlinkError::TooLarge { size: 60, max: 59 })
    );
    assert_eq!(
        build_data_downlink(
            &mut s,
            &DataDown {
                app: Some((0, b"x")),
                ..DataDown::default()
            },
            EU_DR5
        ),
        Err(DownlinkError::InvalidFport(0))
    );
    assert_eq!(
        build_data_downlink(
            &mut s,
            &DataDown {
                app: Some((224, b"x")),
                ..DataDown::default()
            },
            EU_DR5
        ),
        Err(DownlinkError::InvalidFport(224))
    );
    s.fcnt_down = u32::MAX;
    assert_eq!(
        build_data_downlink(
            &mut s,
            &DataDown {
                ack: true,
                ..DataDown::default()
            },
            EU_DR5
        ),
        Err(DownlinkError::FcntExhausted)
    );
    assert_eq!(s.fcnt_down, u32::MAX);
}
