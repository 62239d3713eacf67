use super::*;
use gatewayd_sensor_proto::msg::{encode_message, MAX_SAMPLE_INTERVAL_MS};
use sim::{sin_cycle, SimSensors, XorShift32};

struct Mock {
    now: u64,
    tx: Vec<u8>,
    led: Vec<(u64, bool)>,
    sensors: SimSensors,
}

impl Mock {
    fn new() -> Self {
        Self {
            now: 0,
            tx: Vec::new(),
            led: Vec::new(),
            sensors: SimSensors::new(42),
        }
    }
    /// Decodes (and drains) everything sent so far.
    fn sent(&mut self) -> Vec<Envelope> {
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        d.feed(&self.tx, |r| {
            out.push(decode_message(r.expect("valid frame")).expect("valid msg"))
        });
        assert_eq!(d.pending(), 0, "trailing partial frame");
        self.tx.clear();
        out
    }
}

impl Clock for Mock {
    fn now_ms(&self) -> u64 {
        self.now
    }
}
impl SerialTx for Mock {
    fn write_all(&mut self, bytes: &[u8]) {
        self.tx.extend_from_slice(bytes);
    }
}
impl Sensors for Mock {
    fn sample(&mut self, now_ms: u64) -> SensorSample {
        self.sensors.sample(now_ms)
    }
}
impl Led for Mock {
    fn set_led(&mut self, on: bool) {
        self.led.push((self.now, on));
    }
}
impl Health for Mock {
    fn stack_free_min(&mut self) -> u32 {
        4096
    }
    fn battery_mv(&mut self) -> Option<u16> {
        None
    }
}

fn identity() -> Identity {
    Identity {
        device_id: Str::new("test-0001").unwrap(),
        firmware: Str::new("0.1.0").unwrap(),
        reset_reason: ResetReason::PowerOn,
        watchdog_resets: 3,
    }
}

fn started() -> (App, Mock) {
    let mut app = App::new(identity());
    let mut m = Mock::new();
    app.start(&mut m);
    (app, m)
}

fn frame(env: &Envelope) -> Vec<u8> {
    let (mut s, mut w) = ([0u8; MAX_PAYLOAD], [0u8; MAX_FRAME]);
    let n = write_frame(env, &mut s, &mut w).unwrap();
    w[..n].to_vec()
}

fn send(app: &mut App, m: &mut Mock, bytes: &[u8]) -> Vec<Request> {
    bytes.iter().filter_map(|&b| app.on_rx_byte(b, m)).collect()
}

fn cmd(seq: u16, c: Command) -> Vec<u8> {
    frame(&Envelope::new(seq, Body::Command(c)))
}

/// Advances time in 1 ms steps, polling like the main loop.
fn run_until(app: &mut App, m: &mut Mock, t: u64) {
    while m.now < t {
        m.now += 1;
        app.poll(m);
    }
}

fn reading_times(msgs: &[Envelope]) -> Vec<u32> {
    msgs.iter()
        .filter_map(|e| match &e.body {
            Body::Readings(b) => b.get(0).and_then(|r| r.time_ms),
            _ => None,
        })
        .collect()
}

#[test]
fn boot_sends_hello_then_diagnostics_with_a_leading_delimiter() {
    let (_app, mut m) = started();
    assert_eq!(m.tx[0], 0, "resync byte first");
    let msgs = m.sent();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].seq, 0);
    match &msgs[0].body {
        Body::Hello {
            device_id,
            firmware,
            protocol,
        } => {
            assert_eq!(device_id, "test-0001");
            assert_eq!(firmware, "0.1.0");
            assert_eq!(*protocol, PROTOCOL_VERSION);
        }
        b => panic!("expected Hello, got {b:?}"),
    }
    match &msgs[1].body {
        Body::Diagnostics(d) => {
            assert_eq!(msgs[1].seq, 1);
            assert_eq!(d.reset_reason, ResetReason::PowerOn);
            assert_eq!(d.watchdog_resets, 3);
            assert_eq!(d.sample_interval_ms, 1000);
            assert_eq!(d.stack_free_min, 4096);
            assert_eq!(d.battery_mv, None);
            assert_eq!(d.frames_rx_errors, 0);
            assert_eq!(d.firmware, "0.1.0");
        }
        b => panic!("expected Diagnostics, got {b:?}"),
    }
}

#[test]
fn samples_every_interval_with_both_sensors() {
    let (mut app, mut m) = started();
    m.sent();
    run_until(&mut app, &mut m, 5_500);
    let msgs = m.sent();
    assert_eq!(reading_times(&msgs), vec![1000, 2000, 3000, 4000, 5000]);
    let Body::Readings(b) = &msgs[0].body else {
        panic!()
    };
    assert_eq!(b.len(), 2);
    let t = b.get(0).unwrap();
    assert_eq!(t.sensor, "temperature");
    assert_eq!(t.unit, Unit::Celsius);
    let h = b.get(1).unwrap();
    assert_eq!(h.sensor, "humidity");
    assert_eq!(h.unit, Unit::RelativeHumidity);
    // seq numbers keep counting after Hello (0) and Diagnostics (1).
    assert_eq!(
        msgs.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6]
    );
}

#[test]
fn diagnostics_every_minute() {
    let (mut app, mut m) = started();
    m.sent();
    run_until(&mut app, &mut m, 125_000);
    let diags: Vec<_> = m
        .sent()
        .into_iter()
        .filter_map(|e| match e.body {
            Body::Diagnostics(d) => Some(d.uptime_s),
            _ => None,
        })
        .collect();
    assert_eq!(diags, vec![60, 120]);
}

#[test]
fn set_sample_interval_acks_and_restarts_the_schedule() {
    let (mut app, mut m) = started();
    run_until(&mut app, &mut m, 1_500);
    m.sent();
    assert!(send(
        &mut app,
        &mut m,
        &cmd(77, Command::SetSampleInterval { ms: 300 })
    )
    .is_empty());
    let msgs = m.sent();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0].body,
        Body::Ack {
            seq: 77,
            result: AckResult::Ok
        }
    );
    assert_eq!(app.sample_interval_ms(), 300);
    run_until(&mut app, &mut m, 2_500);
    assert_eq!(reading_times(&m.sent()), vec![1800, 2100, 2400]);
}

#[test]
fn invalid_commands_are_refused_without_effect() {
    let (mut app, mut m) = started();
    m.sent();
    for (seq, c) in [
        (1, Command::SetSampleInterval { ms: 50 }),
        (
            2,
            Command::SetSampleInterval {
                ms: MAX_SAMPLE_INTERVAL_MS + 1,
            },
        ),
        (3, Command::Identify { seconds: 61 }),
    ] {
        assert!(send(&mut app, &mut m, &cmd(seq, c)).is_empty());
        let msgs = m.sent();
        assert_eq!(
            msgs[0].body,
            Body::Ack {
                seq,
                result: AckResult::Err(ErrorCode::InvalidArgument)
            }
        );
    }
    assert_eq!(app.sample_interval_ms(), 1000);
    assert!(m.led.is_empty());
    run_until(&mut app, &mut m, 2_000);
    assert_eq!(reading_times(&m.sent()), vec![1000, 2000]);
}

#[test]
fn request_diagnostics_sends_hello_diagnostics_then_ack() {
    let (mut app, mut m) = started();
    m.sent();
    m.now = 4_321;
    send(&mut app, &mut m, &cmd(9, Command::RequestDiagnostics));
    let msgs = m.sent();
    assert!(matches!(msgs[0].body, Body::Hello { .. }));
    let Body::Diagnostics(d) = &msgs[1].body else {
        panic!("{msgs:?}")
    };
    assert_eq!(d.uptime_s, 4);
    assert_eq!(
        msgs[2].body,
        Body::Ack {
            seq: 9,
            result: AckResult::Ok
        }
    );
    assert_eq!(msgs.len(), 3);
}

#[test]
fn reboot_acks_then_requests_the_reset() {
    let (mut app, mut m) = started();
    m.sent();
    assert_eq!(
        send(&mut app, &mut m, &cmd(5, Command::Reboot)),
        vec![Request::Reboot]
    );
    assert_eq!(
        m.sent()[0].body,
        Body::Ack {
            seq: 5,
            result: AckResult::Ok
        }
    );
}

#[test]
fn identify_blinks_for_the_duration() {
    let (mut app, mut m) = started();
    m.now = 10_000;
    send(&mut app, &mut m, &cmd(1, Command::Identify { seconds: 2 }));
    run_until(&mut app, &mut m, 13_000);
    assert_eq!(m.led.first(), Some(&(10_000, true)));
    assert_eq!(m.led.last(), Some(&(12_000, false)));
    // on at 10000, toggles every 250 ms until 12000 (off at the end).
    let toggles: Vec<u64> = m.led.iter().map(|&(t, _)| t).collect();
    assert_eq!(
        toggles,
        vec![10_000, 10_250, 10_500, 10_750, 11_000, 11_250, 11_500, 11_750, 12_000]
    );
    // identify 0 stops a running blink
    send(&mut app, &mut m, &cmd(2, Command::Identify { seconds: 10 }));
    send(&mut app, &mut m, &cmd(3, Command::Identify { seconds: 0 }));
    assert_eq!(m.led.last(), Some(&(13_000, false)));
}

#[test]
fn garbage_is_counted_not_answered_and_resync_works() {
    let (mut app, mut m) = started();
    m.sent();
    // Bad COBS / CRC frames, then an over-long run.
    send(
        &mut app,
        &mut m,
        &[1, 2, 3, 0, 5, 0xAA, 0xBB, 0xCC, 0xDD, 0],
    );
    send(&mut app, &mut m, &[0x55; 400]);
    send(&mut app, &mut m, &[0]);
    assert!(m.sent().is_empty());
    assert!(app.frames_rx_errors() >= 3, "{}", app.frames_rx_errors());
    send(&mut app, &mut m, &cmd(4, Command::RequestDiagnostics));
    let msgs = m.sent();
    let Body::Diagnostics(d) = &msgs[1].body else {
        panic!()
    };
    assert_eq!(d.frames_rx_errors, app.frames_rx_errors());
}

fn payload_frame(payload: &[u8]) -> Vec<u8> {
    let mut w = [0u8; MAX_FRAME];
    let n = gatewayd_sensor_proto::frame::encode_frame(payload, &mut w).unwrap();
    w[..n].to_vec()
}

fn error_of(msgs: &[Envelope]) -> (ErrorCode, String) {
    match msgs {
        [Envelope {
            body: Body::Error { code, detail },
            ..
        }] => (*code, detail.to_string()),
        other => panic!("expected one Error, got {other:?}"),
    }
}

#[test]
fn protocol_errors_are_answered_with_error_messages() {
    let (mut app, mut m) = started();
    m.sent();
    // Version 2.
    let mut p = [0u8; MAX_PAYLOAD];
    let v1 = encode_message(&Envelope::new(1, Body::Command(Command::Reboot)), &mut p)
        .unwrap()
        .to_vec();
    let mut v2 = v1.clone();
    v2[0] = 2;
    assert!(
        send(&mut app, &mut m, &payload_frame(&v2)).is_empty(),
        "no reboot from v2"
    );
    assert_eq!(
        error_of(&m.sent()),
        (ErrorCode::Unsupported, "protocol version 2".into())
    );
    // Unknown tag 9: version 1, seq 1, tag 9.
    send(&mut app, &mut m, &payload_frame(&[1, 1, 9]));
    assert_eq!(
        error_of(&m.sent()),
        (ErrorCode::Unsupported, "unknown tag 9".into())
    );
    // Malformed: trailing byte, truncated, empty payload.
    let mut trailing = v1.clone();
    trailing.push(0);
    for p in [&trailing[..], &v1[..v1.len() - 1], &[][..]] {
        assert!(send(&mut app, &mut m, &payload_frame(p)).is_empty());
        assert_eq!(
            error_of(&m.sent()),
            (ErrorCode::InvalidArgument, "malformed message".into())
        );
    }
    // A device -> gateway kind.
    send(
        &mut app,
        &mut m,
        &frame(&Envelope::new(
            3,
            Body::Ack {
                seq: 1,
                result: AckResult::Ok,
            },
        )),
    );
    assert_eq!(
        error_of(&m.sent()),
        (ErrorCode::Unsupported, "unexpected message tag 4".into())
    );
    // An Error from the gateway is not answered.
    let detail = Str::new("x").unwrap();
    send(
        &mut app,
        &mut m,
        &frame(&Envelope::new(
            4,
            Body::Error {
                code: ErrorCode::Busy,
                detail,
            },
        )),
    );
    assert!(m.sent().is_empty());
    // None of this counts as a frame error.
    assert_eq!(app.frames_rx_errors(), 0);
}

#[test]
fn command_mid_frame_of_output_and_split_input_bytes() {
    // Commands arrive byte by byte interleaved with polling.
    let (mut app, mut m) = started();
    m.sent();
    let bytes = cmd(11, Command::SetSampleInterval { ms: 100 });
    for &b in &bytes {
        m.now += 3;
        app.poll(&mut m);
        app.on_rx_byte(b, &mut m);
    }
    let msgs = m.sent();
    assert_eq!(
        msgs.last().unwrap().body,
        Body::Ack {
            seq: 11,
            result: AckResult::Ok
        }
    );
}

#[test]
fn seq_wraps() {
    let (mut app, mut m) = started();
    app.seq = u16::MAX;
    m.sent();
    send(&mut app, &mut m, &cmd(1, Command::Reboot));
    run_until(&mut app, &mut m, 1_000);
    let seqs: Vec<u16> = m.sent().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![u16::MAX, 0]);
}

#[test]
fn no_catch_up_burst_after_a_stall() {
    let (mut app, mut m) = started();
    m.sent();
    m.now = 10_500;
    app.poll(&mut m);
    run_until(&mut app, &mut m, 12_000);
    assert_eq!(reading_times(&m.sent()), vec![10_500, 11_500]);
}

#[test]
fn random_bytes_never_panic() {
    let (mut app, mut m) = started();
    let mut rng = XorShift32::new(7);
    for i in 0..200_000u32 {
        let b = rng.next_u32() as u8;
        // bias towards delimiters to produce many short frames
        let b = if b < 16 { 0 } else { b };
        let _ = app.on_rx_byte(b, &mut m);
        if i % 1000 == 0 {
            m.now += 7;
            app.poll(&mut m);
            m.tx.clear();
        }
    }
    assert_eq!(app.tx_failures(), 0);
}

#[test]
fn sim_sensors_are_plausible_and_deterministic() {
    let mut a = SimSensors::new(1);
    let mut b = SimSensors::new(1);
    for t in (0..3_600_000u64).step_by(997) {
        let sa = a.sample(t);
        assert_eq!(sa, b.sample(t));
        let temp = sa.temperature_c.unwrap();
        let hum = sa.humidity_rh.unwrap();
        assert!((17.9..=24.1).contains(&temp), "{temp}");
        assert!((34.7..=55.3).contains(&hum), "{hum}");
    }
    // the wave moves: 2.5 min apart differ by about 3 °C
    let t0 = SimSensors::new(5).sample(0).temperature_c.unwrap();
    let t1 = SimSensors::new(5).sample(150_000).temperature_c.unwrap();
    assert!((t1 - t0 - 3.0).abs() < 0.2, "{t0} {t1}");
}

#[test]
fn sine_approximation_is_close() {
    for i in 0..1000u64 {
        let exact = (i as f64 / 1000.0 * std::f64::consts::TAU).sin() as f32;
        assert!((sin_cycle(i, 1000) - exact).abs() < 0.002, "{i}");
    }
    assert_eq!(sin_cycle(5, 0), 0.0);
}

#[test]
fn device_ids() {
    assert_eq!(device_id_hex("lm3s6965-", 0xBEEF), "lm3s6965-0000beef");
    assert_eq!(
        device_id_hex64("nrf52-", 0x0123_4567_89AB_CDEF),
        "nrf52-0123456789abcdef"
    );
    let long = TruncBuf::<4>::new();
    assert_eq!(long.as_str(), "");
    let mut t = TruncBuf::<4>::new();
    let _ = write!(t, "abcdé");
    assert_eq!(t.as_str(), "abcd");
}
