use super::*;
use gatewayd_sensor_proto::msg::Unit;
use gatewayd_sensor_proto::{Bounded, Str};
use proptest::prelude::*;

const WALL: Timestamp = Timestamp(1_700_000_000_000_000);

fn cfg() -> SessionConfig {
    SessionConfig {
        port: "p0".into(),
        path: "/dev/ttyX".into(),
        command_timeout: Duration::from_millis(100),
        command_retries: 2,
        max_pending: 2,
        hello_timeout: Duration::from_millis(300),
    }
}

fn open(now: Instant) -> Session {
    let mut s = Session::new(cfg());
    s.opening();
    s.opened(now);
    s
}

fn frame(seq: u16, body: Body) -> Vec<u8> {
    encode(&Envelope::new(seq, body)).expect("encodes")
}

fn hello(id: &str) -> Vec<u8> {
    frame(
        0,
        Body::Hello {
            device_id: Str::new(id).unwrap(),
            firmware: Str::new("0.1.0").unwrap(),
            protocol: 1,
        },
    )
}

fn reading(sensor: &str, unit: Unit, v: f32, t: u32) -> msg::Reading {
    msg::Reading {
        sensor: Str::new(sensor).unwrap(),
        unit,
        value: msg::Value::F32(v),
        time_ms: Some(t),
    }
}

fn readings(seq: u16, t: u32) -> Vec<u8> {
    frame(
        seq,
        Body::Readings(
            Bounded::try_from_iter([
                reading("temperature", Unit::Celsius, 21.3, t),
                reading("humidity", Unit::RelativeHumidity, 40.5, t),
            ])
            .unwrap(),
        ),
    )
}

fn diagnostics() -> Diagnostics {
    Diagnostics {
        firmware: Str::new("0.1.0").unwrap(),
        uptime_s: 12,
        reset_reason: ResetReason::PowerOn,
        battery_mv: Some(3300),
        stack_free_min: 1024,
        watchdog_resets: 1,
        sample_interval_ms: 1000,
        frames_rx_errors: 2,
    }
}

fn drain(s: &mut Session) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn submitted(outs: &[Output]) -> Vec<Reading> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Submit(r) => Some(r.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn sent(outs: &[Output]) -> Vec<Envelope> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send(bytes) => Some(bytes.clone()),
            _ => None,
        })
        .flat_map(|b| {
            let mut d = FrameDecoder::new();
            let mut v = Vec::new();
            d.feed(&b, |r| v.push(msg::decode_message(r.unwrap()).unwrap()));
            v
        })
        .collect()
}

#[test]
fn readings_after_hello_become_one_submission_per_message_with_metadata() {
    let now = Instant::now();
    let mut s = open(now);
    s.handle_bytes(&hello("dev-1"), now, WALL);
    s.handle_bytes(&frame(1, Body::Diagnostics(diagnostics())), now, WALL);
    s.handle_bytes(&readings(2, 5000), now, WALL);
    let outs = drain(&mut s);
    assert_eq!(
        outs.iter()
            .filter(|o| matches!(o, Output::Submit(_)))
            .count(),
        2
    );
    let r = submitted(&outs);
    let diag = &r[0];
    assert_eq!(diag.device.as_str(), "serial:dev-1");
    assert_eq!(diag.meta.extra["kind"], "diagnostics");
    assert_eq!(diag.meta.extra["reset_reason"], "power_on");
    let names: Vec<_> = diag.measurements.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "uptime",
            "watchdog_resets",
            "stack_free_min",
            "sample_interval",
            "rx_frame_errors",
            "battery"
        ]
    );
    assert_eq!(diag.measurements[5].value, Some(Value::Float(3.3)));
    let sample = &r[1];
    assert_eq!(sample.time, WALL);
    assert_eq!(sample.measurements[0].name, "temperature");
    assert_eq!(sample.measurements[0].unit.as_deref(), Some("Cel"));
    assert_eq!(sample.measurements[0].value, Some(Value::Float(21.3)));
    assert_eq!(sample.measurements[1].unit.as_deref(), Some("%RH"));
    assert_eq!(sample.meta.extra["firmware"], "0.1.0");
    assert_eq!(sample.meta.extra["port"], "p0");
    assert_eq!(sample.meta.extra["device_time_ms"], "5000");
    assert_eq!(sample.meta.extra["uptime_s"], "12");
    assert_eq!(sample.meta.extra["battery_mv"], "3300");
    assert_eq!(sample.meta.battery, None);
    assert_eq!(s.counters().readings, 2);
    assert_eq!(s.counters().diagnostics, 1);
    let st = s.status();
    let dev = st.device.unwrap();
    assert_eq!(dev.id.as_deref(), Some("serial:dev-1"));
    assert_eq!(dev.sample_interval_ms, Some(1000));
    assert_eq!(dev.last_seen_ms, Some(WALL.0 / 1000));
}

#[test]
fn unidentified_readings_are_held_probed_for_and_bounded() {
    let t0 = Instant::now();
    let mut s = open(t0);
    for i in 0..(MAX_HELD as u32 + 3) {
        s.handle_bytes(&readings(i as u16, i), t0, WALL);
    }
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.held(), MAX_HELD);
    assert_eq!(s.counters().dropped_unidentified, 3);
    // No Hello in time: a RequestDiagnostics probe, then again later.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(300)));
    s.handle_timeout(t0 + Duration::from_millis(300));
    let probes = sent(&drain(&mut s));
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].body, Body::Command(Command::RequestDiagnostics));
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(900)));
    // The device answers: Hello, Diagnostics, Ack (not an unmatched ack).
    s.handle_bytes(&hello("dev-2"), t0, WALL);
    let released = submitted(&drain(&mut s));
    assert_eq!(released.len(), MAX_HELD);
    assert_eq!(released[0].meta.extra["device_time_ms"], "3");
    s.handle_bytes(
        &frame(
            9,
            Body::Ack {
                seq: probes[0].seq,
                result: AckResult::Ok,
            },
        ),
        t0,
        WALL,
    );
    assert_eq!(s.counters().unmatched_acks, 0);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn held_messages_expire() {
    let t0 = Instant::now();
    let mut s = open(t0);
    s.handle_bytes(&readings(1, 1), t0, WALL);
    let later = t0 + Duration::from_millis(300 * u64::from(HOLD_TIMEOUT_FACTOR));
    s.handle_timeout(later);
    assert_eq!(s.held(), 0);
    assert_eq!(s.counters().dropped_unidentified, 1);
}

#[test]
fn an_invalid_device_id_is_counted_and_its_readings_dropped() {
    let now = Instant::now();
    let mut s = open(now);
    s.handle_bytes(&hello("bad id!"), now, WALL);
    s.handle_bytes(&readings(1, 1), now, WALL);
    assert!(submitted(&drain(&mut s)).is_empty());
    assert_eq!(s.counters().invalid_device_id, 1);
    assert_eq!(s.counters().dropped_invalid_id, 1);
}

#[test]
fn commands_are_matched_by_seq_resent_and_time_out() {
    let t0 = Instant::now();
    let mut s = open(t0);
    s.handle_bytes(&hello("d"), t0, WALL);
    drain(&mut s);
    s.submit_command(7, Command::SetSampleInterval { ms: 500 }, t0)
        .unwrap();
    s.submit_command(8, Command::Reboot, t0).unwrap();
    assert_eq!(
        s.submit_command(9, Command::Reboot, t0),
        Err(CommandError::Busy)
    );
    let envs = sent(&drain(&mut s));
    assert_eq!(envs.len(), 2);
    assert_ne!(envs[0].seq, envs[1].seq);
    // An unknown seq is counted and ignored.
    s.handle_bytes(
        &frame(
            0,
            Body::Ack {
                seq: 999,
                result: AckResult::Ok,
            },
        ),
        t0,
        WALL,
    );
    assert_eq!(s.counters().unmatched_acks, 1);
    // The first is acked after 40 ms.
    s.handle_bytes(
        &frame(
            0,
            Body::Ack {
                seq: envs[0].seq,
                result: AckResult::Ok,
            },
        ),
        t0 + Duration::from_millis(40),
        WALL,
    );
    let outs = drain(&mut s);
    let Output::CommandDone {
        id: 7,
        result: Ok(v),
    } = &outs[0]
    else {
        panic!("{outs:?}")
    };
    assert_eq!(v["result"], "ok");
    assert_eq!(v["seq"], envs[0].seq);
    assert_eq!(v["rtt_ms"], 40);
    assert_eq!(v["device"], "serial:d");
    // The second is never answered: resent twice with the same seq.
    let mut t = t0;
    for _ in 0..2 {
        t += Duration::from_millis(100);
        s.handle_timeout(t);
        let again = sent(&drain(&mut s));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0], envs[1]);
    }
    t += Duration::from_millis(100);
    s.handle_timeout(t);
    let outs = drain(&mut s);
    assert!(
        matches!(
            &outs[..],
            [Output::CommandDone {
                id: 8,
                result: Err(CommandError::Timeout(_))
            }]
        ),
        "{outs:?}"
    );
    let c = s.counters();
    assert_eq!(
        (
            c.commands_sent,
            c.commands_resent,
            c.commands_acked,
            c.commands_timed_out
        ),
        (2, 2, 1, 1)
    );
}

#[test]
fn a_refusal_names_the_code_and_closing_fails_the_rest() {
    let t0 = Instant::now();
    let mut s = open(t0);
    s.submit_command(1, Command::Identify { seconds: 5 }, t0)
        .unwrap();
    s.submit_command(2, Command::Reboot, t0).unwrap();
    let envs = sent(&drain(&mut s));
    s.handle_bytes(
        &frame(
            0,
            Body::Ack {
                seq: envs[0].seq,
                result: AckResult::Err(ErrorCode::Busy),
            },
        ),
        t0,
        WALL,
    );
    assert_eq!(
        drain(&mut s),
        [Output::CommandDone {
            id: 1,
            result: Err(CommandError::Refused("device answered Busy".into()))
        }]
    );
    s.closed("read: EIO".into());
    assert_eq!(
        drain(&mut s),
        [Output::CommandDone {
            id: 2,
            result: Err(CommandError::Failed("port closed".into()))
        }]
    );
    assert_eq!(
        s.submit_command(3, Command::Reboot, t0),
        Err(CommandError::Failed("port closed".into()))
    );
    assert_eq!(
        s.submit_command(3, Command::SetSampleInterval { ms: 1 }, t0),
        Err(CommandError::InvalidArgument(
            "ms: must be 100..=3600000".into()
        ))
    );
    assert_eq!(s.status().state, LinkState::Closed);
    assert_eq!(s.status().last_error.as_deref(), Some("read: EIO"));
}

#[test]
fn bad_frames_are_counted_by_kind() {
    let now = Instant::now();
    let mut s = open(now);
    let good = readings(1, 1);
    let mut bad_crc = good.clone();
    let i = bad_crc.len() - 2;
    bad_crc[i] ^= 0x01;
    if bad_crc[i] == 0 {
        bad_crc[i] = 0x02;
    }
    s.handle_bytes(&bad_crc, now, WALL);
    s.handle_bytes(&[0x05, 0x01, 0x00], now, WALL); // COBS claims 4 bytes, has 1
    s.handle_bytes(&[0x02, 0x01, 0x00], now, WALL); // 1 byte: shorter than the CRC
    s.handle_bytes(&[0x11; 300], now, WALL);
    s.handle_bytes(&[0x00], now, WALL);
    let mut v2 = Vec::new();
    let mut wire = [0u8; MAX_FRAME];
    let n = gatewayd_sensor_proto::frame::encode_frame(&[2, 0, 0], &mut wire).unwrap();
    v2.extend_from_slice(&wire[..n]);
    let n = gatewayd_sensor_proto::frame::encode_frame(&[1, 0, 42], &mut wire).unwrap();
    v2.extend_from_slice(&wire[..n]);
    let n = gatewayd_sensor_proto::frame::encode_frame(&[1, 0, 1, 9], &mut wire).unwrap();
    v2.extend_from_slice(&wire[..n]);
    s.handle_bytes(&v2, now, WALL);
    let c = s.counters();
    assert_eq!(
        (
            c.crc_errors,
            c.cobs_errors,
            c.too_short,
            c.too_long,
            c.version_mismatch,
            c.unknown_message,
            c.malformed
        ),
        (1, 1, 1, 1, 1, 1, 1)
    );
    assert_eq!(c.frames_ok, 3);
}

fn arb_body() -> impl Strategy<Value = Body> {
    let name = "[a-z]{1,12}";
    prop_oneof![
        (name, any::<f32>(), proptest::option::of(any::<u32>())).prop_map(|(n, v, t)| {
            Body::Reading(msg::Reading {
                sensor: Str::new(&n).unwrap(),
                unit: Unit::Celsius,
                value: msg::Value::F32(v),
                time_ms: t,
            })
        }),
        (name, any::<i32>()).prop_map(|(n, v)| {
            Body::Readings(
                Bounded::try_from_iter([msg::Reading {
                    sensor: Str::new(&n).unwrap(),
                    unit: Unit::Count,
                    value: msg::Value::I32(v),
                    time_ms: None,
                }])
                .unwrap(),
            )
        }),
        Just(Body::Diagnostics(diagnostics())),
        (name, name).prop_map(|(id, fw)| Body::Hello {
            device_id: Str::new(&id).unwrap(),
            firmware: Str::new(&fw).unwrap(),
            protocol: 1,
        }),
        any::<u16>().prop_map(|seq| Body::Ack {
            seq,
            result: AckResult::Ok
        }),
    ]
}

fn run_chunks(stream: &[u8], cuts: &[usize]) -> (Vec<Output>, Counters) {
    let now = Instant::now();
    let mut s = open(now);
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    let mut at = 0;
    for c in cuts.into_iter().chain([stream.len()]) {
        s.handle_bytes(&stream[at..c], now, WALL);
        at = c;
    }
    let mut counters = s.counters().clone();
    counters.bytes_rx = 0;
    (drain(&mut s), counters)
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let now = Instant::now();
        let mut s = open(now);
        s.handle_bytes(&bytes, now, WALL);
        s.handle_timeout(now + Duration::from_secs(3600));
        let _ = drain(&mut s);
        let _ = s.status();
    }

    #[test]
    fn valid_frames_decode_the_same_whatever_the_chunking(
        bodies in proptest::collection::vec(arb_body(), 1..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        garbage in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut stream = garbage;
        for (i, b) in bodies.into_iter().enumerate() {
            stream.extend(frame(i as u16, b));
        }
        let whole = run_chunks(&stream, &[]);
        let chunked = run_chunks(&stream, &cuts);
        prop_assert_eq!(whole, chunked);
    }
}
