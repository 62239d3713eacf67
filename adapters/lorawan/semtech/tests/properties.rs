//! Property tests: decode never panics; valid packets survive encode/decode.

use gatewayd_semtech_udp::{
    mhz_from_hz, CodingRate, CrcStatus, DataRate, Datagram, Eui, Packet, ProtocolVersion,
    PullRespBody, PushBody, RSig, RxPk, Stat, Token, TxAckBody, TxAckStatus, TxPk,
    MAX_DATAGRAM_LEN,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        -200.0..200.0f64,
        proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
    ]
}

fn freq() -> impl Strategy<Value = f64> {
    prop_oneof![
        (1u32..).prop_map(mhz_from_hz),
        (1u32..).prop_map(|hz| f64::from(hz) / 1e6),
        0.0000006..4294.9672f64,
    ]
}

fn datr() -> impl Strategy<Value = DataRate> {
    prop_oneof![
        (5u8..=12, prop_oneof![Just(125u32), Just(250), Just(500)])
            .prop_map(|(sf, bw_khz)| DataRate::Lora { sf, bw_khz }),
        (1u32..).prop_map(|bps| DataRate::Fsk { bps }),
    ]
}

fn codr() -> impl Strategy<Value = CodingRate> {
    prop_oneof![
        Just(CodingRate::Cr45),
        Just(CodingRate::Cr46),
        Just(CodingRate::Cr47),
        Just(CodingRate::Cr48),
        "[0-9A-Z/?]{0,6}".prop_map(|s| CodingRate::from(s.as_str())),
    ]
}

fn rsig() -> impl Strategy<Value = RSig> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<i16>(),
        option::of(any::<i16>()),
        option::of(finite()),
        option::of(any::<String>()),
        option::of(any::<i32>()),
    )
        .prop_map(|(ant, chan, rssic, rssis, lsnr, etime, foff)| RSig {
            ant,
            chan,
            rssic,
            rssis,
            lsnr,
            etime,
            foff,
        })
}

fn rxpk() -> impl Strategy<Value = RxPk> {
    (
        (
            option::of(any::<String>()),
            option::of(any::<u64>()),
            any::<u32>(),
            freq(),
        ),
        (
            any::<u8>(),
            any::<u8>(),
            prop_oneof![
                Just(CrcStatus::CrcOk),
                Just(CrcStatus::CrcBad),
                Just(CrcStatus::NoCrc)
            ],
        ),
        (
            datr(),
            option::of(codr()),
            option::of(any::<i16>()),
            option::of(finite()),
        ),
        (vec(any::<u8>(), 0..300), vec(rsig(), 0..3)),
    )
        .prop_map(
            |(
                (time, tmms, tmst, freq),
                (chan, rfch, stat),
                (datr, codr, rssi, lsnr),
                (data, rsig),
            )| {
                RxPk {
                    time,
                    tmms,
                    tmst,
                    freq,
                    chan,
                    rfch,
                    stat,
                    datr,
                    codr,
                    rssi,
                    lsnr,
                    data,
                    rsig,
                }
            },
        )
}

fn stat() -> impl Strategy<Value = Stat> {
    (
        (
            option::of(any::<String>()),
            option::of(finite()),
            option::of(finite()),
            option::of(any::<i32>()),
        ),
        (
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(finite()),
        ),
        (
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(finite()),
        ),
    )
        .prop_map(
            |((time, lati, long, alti), (rxnb, rxok, rxfw, ackr), (dwnb, txnb, temp))| Stat {
                time,
                lati,
                long,
                alti,
                rxnb,
                rxok,
                rxfw,
                ackr,
                dwnb,
                txnb,
                temp,
            },
        )
}

fn txpk() -> impl Strategy<Value = TxPk> {
    (
        (
            any::<bool>(),
            option::of(any::<u32>()),
            option::of(any::<u64>()),
            freq(),
            any::<u8>(),
        ),
        (
            option::of(any::<i8>()),
            datr(),
            option::of(codr()),
            option::of(any::<u32>()),
        ),
        (
            any::<bool>(),
            option::of(any::<u16>()),
            any::<bool>(),
            vec(any::<u8>(), 0..300),
        ),
    )
        .prop_map(
            |(
                (imme, tmst, tmms, freq, rfch),
                (powe, datr, codr, fdev),
                (ipol, prea, ncrc, data),
            )| TxPk {
                imme,
                tmst,
                tmms,
                freq,
                rfch,
                powe,
                datr,
                codr,
                fdev,
                ipol,
                prea,
                ncrc,
                data,
            },
        )
}

fn tx_ack_status() -> impl Strategy<Value = TxAckStatus> {
    prop_oneof![
        Just(TxAckStatus::None),
        Just(TxAckStatus::TooLate),
        Just(TxAckStatus::TooEarly),
        Just(TxAckStatus::CollisionPacket),
        Just(TxAckStatus::CollisionBeacon),
        Just(TxAckStatus::TxFreq),
        Just(TxAckStatus::TxPower),
        Just(TxAckStatus::GpsUnlocked),
        any::<String>().prop_map(|s| TxAckStatus::from(s.as_str())),
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    let token = any::<u16>().prop_map(Token);
    let eui = any::<[u8; 8]>().prop_map(Eui);
    prop_oneof![
        (
            token.clone(),
            eui.clone(),
            vec(rxpk(), 0..8),
            option::of(stat())
        )
            .prop_map(|(token, gateway, rxpk, stat)| Packet::PushData {
                token,
                gateway,
                body: PushBody {
                    rxpk: rxpk.into_iter().map(Ok).collect(),
                    stat: stat.map(Ok)
                },
            }),
        token.clone().prop_map(|token| Packet::PushAck { token }),
        (token.clone(), eui.clone())
            .prop_map(|(token, gateway)| Packet::PullData { token, gateway }),
        token.clone().prop_map(|token| Packet::PullAck { token }),
        (token.clone(), txpk()).prop_map(|(token, txpk)| Packet::PullResp {
            token,
            body: PullRespBody { txpk }
        }),
        (
            token,
            eui,
            option::of((
                option::of(tx_ack_status()),
                option::of(tx_ack_status()),
                option::of(any::<i64>())
            ))
        )
            .prop_map(|(token, gateway, body)| Packet::TxAck {
                token,
                gateway,
                body: body.map(|(error, warn, value)| TxAckBody { error, warn, value }),
            }),
    ]
}

fn datagram() -> impl Strategy<Value = Datagram> {
    (any::<bool>(), packet()).prop_map(|(v1, packet)| Datagram {
        version: if v1 && !matches!(packet, Packet::TxAck { .. }) {
            ProtocolVersion::V1
        } else {
            ProtocolVersion::V2
        },
        packet,
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = Datagram::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_a_valid_header_with_arbitrary_bytes(
        version in 0u8..4, id in 0u8..7, rest in vec(any::<u8>(), 0..512),
    ) {
        let mut d = vec![version, 1, 2, id];
        d.extend(rest);
        let _ = Datagram::decode(&d);
    }

    #[test]
    fn decode_never_panics_on_a_mutated_valid_datagram(
        d in datagram(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = d.to_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = Datagram::decode(&bytes);
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Ok(p) = Datagram::decode(&bytes) {
            // Whatever decodes re-encodes to something that decodes the same.
            let again = Datagram::decode(&p.to_bytes());
            prop_assert_eq!(again, Ok(p.without_errors()));
        }
    }

    #[test]
    fn valid_packets_round_trip_through_encode_and_decode(d in datagram()) {
        let bytes = d.to_bytes();
        prop_assert!(bytes.len() <= MAX_DATAGRAM_LEN);
        let back = Datagram::decode(&bytes);
        prop_assert_eq!(back.as_ref(), Ok(&d));
        // And the encoding is canonical: encode(decode(x)) == x.
        prop_assert_eq!(back.unwrap().to_bytes(), bytes);
        if d.version == ProtocolVersion::V2 {
            prop_assert_eq!(Packet::decode(&d.packet.to_bytes()), Ok(d.packet));
        }
    }

    #[test]
    fn data_rates_display_what_they_parse(dr in datr()) {
        prop_assert_eq!(dr.to_string().parse::<DataRate>(), Ok(dr));
    }
}
