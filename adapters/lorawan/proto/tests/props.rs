//! Property tests: no input makes the protocol code panic, and the FCnt
//! reconstruction keeps its contract for every input.

mod common;

use common::{rx, uplink, Up};
use gatewayd_lorawan_proto::{
    classify, decode_cayenne, fcnt32, parse_join_request, parse_uplink_mac, process_data_uplink,
    Action, Activation, AesKey, DevAddr, DeviceRecord, Eui64, Event, MemoryStore, NetworkServer,
    Region, ServerConfig, Session, MAX_FCNT_GAP,
};
use proptest::prelude::*;

fn session() -> Session {
    Session::abp(DevAddr(0x2601_1BDA), [0x11; 16], [0x22; 16], Region::Eu868)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn uplink_processing_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut s = session();
        let before = s.clone();
        if process_data_uplink(&mut s, &bytes).is_err() {
            prop_assert_eq!(s, before);
        }
        let _ = classify(&bytes);
        let _ = parse_join_request(&bytes);
        let _ = parse_uplink_mac(&bytes);
    }

    #[test]
    fn uplink_processing_never_panics_on_mutated_valid_frames(
        fcnt in 0u32..200_000,
        payload in proptest::collection::vec(any::<u8>(), 0..60),
        fport in proptest::option::of(any::<u8>()),
        flips in proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
        cut in 0usize..100,
        last in proptest::option::of(0u32..200_000),
    ) {
        let fport = if payload.is_empty() { fport } else { Some(fport.unwrap_or(1)) };
        let fport = if fport == Some(0) { Some(1) } else { fport };
        let mut phy = uplink(&Up { fcnt, fport, payload: &payload, ..Up::default() });
        for (i, x) in flips {
            if let Some(b) = phy.get_mut(i) {
                *b ^= x;
            }
        }
        phy.truncate(phy.len().saturating_sub(cut % 4));
        let mut s = session();
        s.fcnt_up = last;
        let before = s.clone();
        match process_data_uplink(&mut s, &phy) {
            Ok(up) => {
                prop_assert_eq!(up.fcnt32 as u16, fcnt as u16);
                prop_assert!(up.retransmission || Some(up.fcnt32) > last || last.is_none());
            }
            Err(_) => prop_assert_eq!(s, before),
        }
    }

    #[test]
    fn cayenne_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(ms) = decode_cayenne(&bytes) {
            prop_assert!(ms.len() <= bytes.len());
            for m in ms {
                prop_assert!(m.value.is_finite());
            }
        }
    }

    #[test]
    fn fcnt32_is_the_smallest_matching_value_within_the_gap(last in proptest::option::of(any::<u32>()), f in any::<u16>()) {
        match (last, fcnt32(last, f)) {
            (None, r) => prop_assert_eq!(r, Ok(u32::from(f))),
            (Some(l), Ok(v)) => {
                prop_assert_eq!(v as u16, f);
                prop_assert!(v > l);
                prop_assert!(v - l <= MAX_FCNT_GAP);
                prop_assert!(u64::from(v) < u64::from(l) + 0x1_0000, "smallest such value");
            }
            (Some(l), Err(_)) => {
                // No value within the gap matches.
                let hit = (1..=u64::from(MAX_FCNT_GAP))
                    .map(|d| u64::from(l) + d)
                    .find(|v| *v as u16 == f && *v <= u64::from(u32::MAX));
                prop_assert_eq!(hit, None);
            }
        }
    }

    #[test]
    fn network_server_never_panics_on_arbitrary_uplinks(
        frames in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..64), 0u64..500, any::<i8>()), 1..8)
    ) {
        let mut store = MemoryStore::new();
        store.insert(DeviceRecord {
            dev_eui: Eui64::from(1),
            profile: "cayenne".into(),
            activation: Activation::Abp {
                dev_addr: DevAddr(0x2601_1BDA),
                nwk_s_key: AesKey([0x11; 16]),
                app_s_key: AesKey([0x22; 16]),
            },
            session: None,
        });
        let mut ns = NetworkServer::new(ServerConfig::new(Region::Eu868)).unwrap();
        let mut now = 0;
        for (mut phy, dt, snr) in frames {
            // Half the time, make it look like a data uplink for the device.
            if phy.len() > 8 && snr > 0 {
                phy[0] = 0x40;
                phy[1..5].copy_from_slice(&0x2601_1BDAu32.to_le_bytes());
                phy[5] &= 0xF0;
            }
            now += dt;
            let a = ns.handle(&store, Event::Uplink { now_ms: now, rx: rx(1, 0, -100, f32::from(snr)), phy });
            store.apply(&a);
            for x in &a {
                prop_assert!(!matches!(x, Action::Reading(_)), "no reading without a valid MIC");
            }
        }
        let a = ns.handle(&store, Event::Tick { now_ms: now + 1_000 });
        for x in &a {
            prop_assert!(!matches!(x, Action::Reading(_) | Action::Downlink(_)));
        }
    }
}
