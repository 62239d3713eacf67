//! The edge-app runtime with the real example guests (wasm components built
//! from source by `edge-apps/build-guests.sh`), signed at test time.

mod common;

use std::time::Duration;

use common::*;
use gatewayd_artifact::{Algorithm, SigningKey};
use gatewayd_edge::{AppEventKind, EdgeError};
use gatewayd_model::{Measurement, Reading, Timestamp, Value};

const SEC: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_app_alerts_on_the_edge_and_passes_readings() {
    let env = Env::new();
    let rt = env.start();
    let name = rt
        .handle
        .deploy(bundle("threshold-alert", &env.key))
        .await
        .unwrap();
    assert_eq!(name, "threshold-alert");
    let p = rt
        .handle
        .process(vec![vec![
            temp("coap:a", SEC, 20.0),
            temp("coap:a", 2 * SEC, 31.0),
            temp("coap:a", 3 * SEC, 32.0),
        ]])
        .await
        .unwrap();
    assert_eq!(p.groups[0].len(), 3, "every reading passes");
    let alerts: Vec<_> = p.derived.iter().filter(|r| is_alert(r)).collect();
    assert_eq!(
        alerts.len(),
        1,
        "one alert on crossing, not one per reading: {:?}",
        p.derived
    );
    assert_eq!(alerts[0].device.as_str(), "coap:a");
    assert_eq!(
        alerts[0].meta.source.as_deref(),
        Some("app:threshold-alert")
    );
    // Still above: no new alert (state kept in the key-value store).
    let p = rt
        .handle
        .process(vec![vec![temp("coap:a", 4 * SEC, 33.0)]])
        .await
        .unwrap();
    assert!(p.derived.iter().all(|r| !is_alert(r)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_convert_replaces_readings_and_leaves_others() {
    let env = Env::new();
    let rt = env.start();
    rt.handle
        .deploy(bundle("unit-convert", &env.key))
        .await
        .unwrap();
    let other = Reading::new(
        "coap:b".parse().unwrap(),
        Timestamp(SEC),
        vec![Measurement::float("humidity", Some("%RH"), 40.0)],
    );
    let p = rt
        .handle
        .process(vec![vec![temp("coap:a", SEC, 21.5)], vec![other.clone()]])
        .await
        .unwrap();
    assert_eq!(p.groups.len(), 2, "groups keep their shape");
    let t = &p.groups[0][0];
    let m = &t.measurements[0];
    assert_eq!(m.unit.as_deref(), Some("K"));
    assert!(
        (float(t, "temperature").unwrap() - 294.65).abs() < 1e-6,
        "{t:?}"
    );
    assert_eq!(p.groups[1][0], other, "an unselected reading is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_codec_decodes_payloads() {
    let env = Env::new();
    let rt = env.start();
    rt.handle
        .deploy(bundle("lora-codec", &env.key))
        .await
        .unwrap();
    // 0x00E1 = 22.5 °C, 0x37 = 55 %RH, 0x0BB8 = 3000 mV (see the example's README).
    // As the LoRaWAN source makes it: the device's profile in the metadata.
    let raw = |profile: &str| {
        let mut r = Reading::new(
            "lora:70b3d57ed0000001".parse().unwrap(),
            Timestamp(SEC),
            vec![Measurement {
                name: "payload".into(),
                unit: None,
                value: Some(Value::Data(vec![0x00, 0xE1, 0x37, 0x0B, 0xB8])),
                sum: None,
            }],
        );
        r.meta.extra.insert("profile".into(), profile.into());
        r
    };
    let p = rt
        .handle
        .process(vec![vec![raw("lora-codec")], vec![raw("other-codec")]])
        .await
        .unwrap();
    let r = &p.groups[0][0];
    assert_eq!(float(r, "temperature"), Some(22.5), "{r:?}");
    assert_eq!(float(r, "humidity"), Some(55.0));
    assert_eq!(float(r, "battery"), Some(3.0));
    assert_eq!(
        p.groups[1][0],
        raw("other-codec"),
        "a device of another profile is not this codec's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wat_sampler_passes_every_nth() {
    let env = Env::new();
    let rt = env.start();
    rt.handle
        .deploy(bundle_with("sample-every-n", &env.key, |t| {
            set(t, &["config", "every"], 3)
        }))
        .await
        .unwrap();
    let input: Vec<Reading> = (0..9).map(|i| temp("coap:a", i * SEC, i as f64)).collect();
    let p = rt.handle.process(vec![input]).await.unwrap();
    assert_eq!(p.groups[0].len(), 3, "{:?}", p.groups[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downsample_window_closes_by_time_and_drops_raw_readings() {
    let env = Env::new();
    let mut rt = env.start();
    rt.handle
        .deploy(bundle_with("downsample", &env.key, |t| {
            set(t, &["delivery", "window_seconds"], 1)
        }))
        .await
        .unwrap();
    let p = rt
        .handle
        .process(vec![vec![
            temp("coap:a", SEC, 10.0),
            temp("coap:a", SEC + 1, 20.0),
            temp("coap:a", SEC + 2, 30.0),
        ]])
        .await
        .unwrap();
    assert!(p.groups[0].is_empty(), "raw readings go into the window");
    let d = next_derived(&mut rt, Duration::from_secs(5))
        .await
        .expect("window closes");
    let agg = d
        .readings
        .iter()
        .find(|r| float(r, "temperature_mean").is_some())
        .expect("aggregate");
    assert_eq!(float(agg, "temperature_mean"), Some(20.0));
    assert_eq!(float(agg, "temperature_min"), Some(10.0));
    assert_eq!(float(agg, "temperature_max"), Some(30.0));
    assert_eq!(float(agg, "temperature_count"), Some(3.0));
    rt.handle
        .committed(d.token.expect("window output is confirmed"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_window_survives_a_restart_and_closes_after_it() {
    let env = Env::new();
    {
        let rt = env.start();
        rt.handle
            .deploy(bundle_with("downsample", &env.key, |t| {
                set(t, &["delivery", "window_seconds"], 3600)
            }))
            .await
            .unwrap();
        let p = rt
            .handle
            .process(vec![vec![
                temp("coap:a", SEC, 10.0),
                temp("coap:a", SEC, 30.0),
            ]])
            .await
            .unwrap();
        assert!(p.groups[0].is_empty());
        drop(rt.handle);
        rt.thread.join();
    }
    let rt = env.start();
    let s = rt.handle.list();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].window_len, 2, "the open window was restored: {s:?}");
    assert!(
        s[0].compiled_from_cache,
        "restart reuses the compiled cache"
    );
    // Removing the app releases the windowed readings instead of losing them.
    let mut rt = rt;
    rt.handle.remove("downsample").await.unwrap();
    let d = next_derived(&mut rt, Duration::from_secs(5))
        .await
        .expect("flush");
    let n: usize = d.readings.len();
    assert!(n >= 1, "window flushed on remove: {d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reuses_the_compiled_cache() {
    let env = Env::new();
    {
        let rt = env.start();
        rt.handle
            .deploy(bundle("unit-convert", &env.key))
            .await
            .unwrap();
        assert!(
            !rt.handle.list()[0].compiled_from_cache,
            "first deploy compiles"
        );
        drop(rt.handle);
        rt.thread.join();
    }
    let cache = env.paths().cache();
    let entries = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(entries, 1, "one compiled artifact in {}", cache.display());
    let rt = env.start();
    let s = rt.handle.list();
    assert_eq!(s[0].name, "unit-convert");
    assert!(s[0].compiled_from_cache);
    let p = rt
        .handle
        .process(vec![vec![temp("coap:a", SEC, 0.0)]])
        .await
        .unwrap();
    assert_eq!(p.groups[0][0].measurements[0].unit.as_deref(), Some("K"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_tampered_and_wrongly_signed_bundles_are_refused() {
    let env = Env::new();
    let rt = env.start();
    // Signed by a key the gateway does not trust.
    let stranger = SigningKey::generate(Algorithm::Ed25519).unwrap();
    let e = rt
        .handle
        .deploy(bundle("unit-convert", &stranger))
        .await
        .unwrap_err();
    assert!(matches!(e, EdgeError::Artifact(_)), "{e}");
    assert!(e.to_string().contains("untrusted"), "{e}");
    // Unsigned.
    let (m, w) = guest("unit-convert");
    let unsigned = gatewayd_artifact::pack(&m, &w, &[], &[]).unwrap();
    let e = rt.handle.deploy(unsigned).await.unwrap_err();
    assert!(e.to_string().contains("not signed"), "{e}");
    // Tampered: one byte of the module changed after signing.
    let mut b = bundle("unit-convert", &env.key);
    let pos = b
        .windows(4)
        .position(|w| w == b"\0asm")
        .expect("module in the archive");
    b[pos + 100] ^= 0xff;
    let e = rt.handle.deploy(b).await.unwrap_err();
    assert!(
        e.to_string().contains("sha256") && e.to_string().contains("manifest says"),
        "{e}"
    );
    assert!(rt.handle.list().is_empty(), "nothing was deployed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ml_dsa_signed_bundle_is_accepted() {
    let env = Env::with(|_| {});
    let pq = SigningKey::generate(Algorithm::MlDsa65).unwrap();
    let p = env.dir.path().join("pq.pub");
    pq.public().save(&p).unwrap();
    let mut cfg = env.cfg.clone();
    cfg.trusted_keys.push(p);
    cfg.require_algorithms = vec!["ml-dsa-65".into()];
    let rt = gatewayd_edge::EdgeRuntime::start(cfg, &env.paths()).unwrap();
    // ed25519 alone no longer satisfies the policy.
    let e = rt
        .handle
        .deploy(bundle("unit-convert", &env.key))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ml-dsa-65"), "{e}");
    rt.handle.deploy(bundle("unit-convert", &pq)).await.unwrap();
}

async fn hostile_is_contained(hostile: &str, expected_fault: &str) {
    contained_with(hostile, expected_fault, |_| {}).await
}

async fn contained_with(hostile: &str, expected_fault: &str, edit: impl FnOnce(&mut toml::Table)) {
    let env = Env::new();
    let rt = env.start();
    let mut events = rt.handle.events();
    rt.handle
        .deploy(bundle_with(hostile, &env.key, edit))
        .await
        .unwrap();
    rt.handle
        .deploy(bundle("threshold-alert", &env.key))
        .await
        .unwrap();
    let input = vec![temp("coap:a", SEC, 20.0), temp("coap:a", 2 * SEC, 35.0)];
    let p = rt.handle.process(vec![input.clone()]).await.unwrap();
    // The hostile app's readings pass untouched (policy pass) …
    assert_eq!(p.groups[0], input);
    // … and the other app still ran.
    assert_eq!(
        p.derived.iter().filter(|r| is_alert(r)).count(),
        1,
        "{:?}",
        p.derived
    );
    let mut seen = None;
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        if let AppEventKind::Failed { fault, .. } = &ev.kind {
            assert_eq!(ev.app, hostile);
            seen = Some(fault.clone());
            break;
        }
    }
    assert_eq!(seen.as_deref(), Some(expected_fault));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_stopped_and_others_unaffected() {
    // Default fuel (5e8) runs out before the 100 ms deadline on most
    // machines; either limit stopping it is correct.
    let env = Env::new();
    let rt = env.start();
    rt.handle
        .deploy(bundle("hostile-spin", &env.key))
        .await
        .unwrap();
    let mut events = rt.handle.events();
    let p = rt
        .handle
        .process(vec![vec![temp("coap:a", SEC, 1.0)]])
        .await
        .unwrap();
    assert_eq!(p.groups[0].len(), 1);
    let ev = tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .unwrap()
        .unwrap();
    // (subscribed after the deploy: the first event is the failure)
    match ev.kind {
        AppEventKind::Failed { fault, .. } => {
            assert!(fault == "fuel" || fault == "timeout", "{fault}")
        }
        k => panic!("{k:?}"),
    }
    hostile_is_contained("hostile-spin", "fuel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_deadline_stops_a_loop_with_unlimited_fuel() {
    let env = Env::new();
    let rt = env.start();
    let mut events = rt.handle.events();
    rt.handle
        .deploy(bundle_with("hostile-spin", &env.key, |t| {
            set(t, &["limits", "fuel_per_call"], 10_000_000_000i64);
            set(t, &["limits", "time_ms_per_call"], 20);
        }))
        .await
        .unwrap();
    rt.handle
        .process(vec![vec![temp("coap:a", SEC, 1.0)]])
        .await
        .unwrap();
    loop {
        let ev = events.recv().await.unwrap();
        if let AppEventKind::Failed { fault, .. } = &ev.kind {
            assert_eq!(fault, "timeout", "{ev:?}");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_stopped_and_others_unaffected() {
    hostile_is_contained("hostile-membomb", "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_app_is_stopped_and_others_unaffected() {
    hostile_is_contained("hostile-trap", "trap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_is_refused_and_others_unaffected() {
    // 20 000 readings fit in memory but exceed max_output_readings (10 000).
    contained_with("hostile-flood", "output", |t| {
        set(t, &["config", "count"], 20_000)
    })
    .await;
    // A million do not fit in the app's memory: stopped there instead.
    hostile_is_contained("hostile-flood", "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_init_is_reported() {
    hostile_is_contained("hostile-initfail", "init").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_disables_with_backoff_then_retries() {
    let env = Env::new();
    let rt = env.start();
    let mut events = rt.handle.events();
    rt.handle
        .deploy(bundle("hostile-trap", &env.key))
        .await
        .unwrap();
    for i in 0..3 {
        rt.handle
            .process(vec![vec![temp("coap:a", i * SEC, 1.0)]])
            .await
            .unwrap();
    }
    let mut disabled = false;
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        if let AppEventKind::Disabled { for_ms, .. } = ev.kind {
            assert_eq!(for_ms, 300);
            disabled = true;
            break;
        }
    }
    assert!(disabled, "disabled after 3 consecutive failures");
    // While disabled, calls are not attempted: readings pass.
    let p = rt
        .handle
        .process(vec![vec![temp("coap:a", 9 * SEC, 1.0)]])
        .await
        .unwrap();
    assert_eq!(p.groups[0].len(), 1);
    let s = wait_status(&rt, Duration::from_secs(3), |s| {
        s[0].passed_while_failing >= 4
    })
    .await;
    assert_eq!(s[0].failures, 3, "{s:?}");
    // After the backoff the app is tried again (and fails again).
    tokio::time::sleep(Duration::from_millis(400)).await;
    rt.handle
        .process(vec![vec![temp("coap:a", 10 * SEC, 1.0)]])
        .await
        .unwrap();
    wait_status(&rt, Duration::from_secs(3), |s| s[0].failures == 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_policy_keeps_readings_until_a_fixed_version_replays_them() {
    let env = Env::new();
    let mut rt = env.start();
    // A broken codec (it traps), deployed with policy hold under the
    // name unit-convert …
    rt.handle
        .deploy(bundle_with("hostile-trap", &env.key, |t| {
            set(t, &["app", "name"], "unit-convert");
            set(t, &["on_failure"], "hold");
        }))
        .await
        .unwrap();
    let input: Vec<Reading> = (0..5).map(|i| temp("coap:a", i * SEC, i as f64)).collect();
    let p = rt.handle.process(vec![input]).await.unwrap();
    assert!(p.groups[0].is_empty(), "held, not passed: {:?}", p.groups);
    wait_status(&rt, Duration::from_secs(3), |s| s[0].held == 5).await;
    // … upgraded to the working version: the held readings come out converted.
    rt.handle
        .deploy(bundle_with("unit-convert", &env.key, |t| {
            set(t, &["app", "version"], "1.0.1");
            set(t, &["on_failure"], "hold");
        }))
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < 5 {
        let d = next_derived(&mut rt, Duration::from_secs(5))
            .await
            .expect("replay");
        out.extend(d.readings);
        if let Some(t) = d.token {
            rt.handle.committed(t).await;
        }
    }
    assert_eq!(out.len(), 5);
    assert!(
        out.iter()
            .all(|r| r.measurements[0].unit.as_deref() == Some("K")),
        "{out:?}"
    );
    wait_status(&rt, Duration::from_secs(3), |s| s[0].held == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_load_processes_every_reading_exactly_once() {
    let env = Env::new();
    let rt = env.start();
    rt.handle
        .deploy(bundle("unit-convert", &env.key))
        .await
        .unwrap();
    let v2 = bundle_with("unit-convert", &env.key, |t| {
        set(t, &["app", "version"], "2.0.0");
        set(t, &["config", "to"], "degF");
    });
    let h = rt.handle.clone();
    let swapped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = swapped.clone();
    // Load runs before, during and after the upgrade.
    let load = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut i = 0i64;
        let mut after = 0;
        while after < 200 {
            let p = h
                .process(vec![vec![temp("coap:a", i, 100.0)]])
                .await
                .unwrap();
            out.extend(p.groups.into_iter().flatten());
            i += 1;
            if done.load(std::sync::atomic::Ordering::SeqCst) {
                after += 1;
            }
        }
        (out, i as usize)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    rt.handle.deploy(v2).await.unwrap();
    swapped.store(true, std::sync::atomic::Ordering::SeqCst);
    let (out, sent) = load.await.unwrap();
    assert_eq!(out.len(), sent, "nothing lost");
    let mut times: Vec<i64> = out.iter().map(|r| r.time.as_micros()).collect();
    times.sort();
    times.dedup();
    assert_eq!(times.len(), sent, "nothing doubled");
    let (mut k, mut f) = (0, 0);
    for r in &out {
        match r.measurements[0].unit.as_deref() {
            Some("K") => {
                k += 1;
                assert!((float(r, "temperature").unwrap() - 373.15).abs() < 1e-6);
            }
            Some(u) => {
                f += 1;
                assert!(
                    (float(r, "temperature").unwrap() - 212.0).abs() < 1e-6,
                    "{u} {r:?}"
                );
            }
            None => panic!("unconverted: {r:?}"),
        }
    }
    // Once switched, never back: the readings are processed in order.
    let first_f = out
        .iter()
        .position(|r| r.measurements[0].unit.as_deref() != Some("K"));
    if let Some(ff) = first_f {
        assert!(out[ff..]
            .iter()
            .all(|r| r.measurements[0].unit.as_deref() != Some("K")));
    }
    assert!(
        k > 0 && f > 0,
        "the swap happened mid-stream (k={k}, f={f})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vibration_app_runs_the_onnx_model() {
    let env = Env::new();
    let rt = env.start();
    rt.handle
        .deploy(bundle("vibration-anomaly", &env.key))
        .await
        .unwrap();
    let window = |anomalous: bool| -> Vec<Reading> {
        (0..32)
            .map(|i| {
                let x = i as f64;
                let mut v = (x * 0.7).sin() * 0.5 + (x * 1.9).sin() * 0.2;
                if anomalous && i % 5 == 0 {
                    v += 3.0;
                }
                Reading::new(
                    "serial:pump-1".parse().unwrap(),
                    Timestamp(i as i64 * 1000),
                    vec![Measurement::float("vibration", Some("m/s2"), v)],
                )
            })
            .collect()
    };
    let p = rt.handle.process(vec![window(true)]).await.unwrap();
    assert_eq!(p.groups[0].len(), 32, "originals kept");
    let score = p
        .derived
        .iter()
        .find_map(|r| float(r, "anomaly_score"))
        .expect("score emitted");
    assert!(score.is_finite() && score > 0.0, "{score}");
    assert!(
        p.derived.iter().any(is_alert),
        "spiky window is anomalous: score {score}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_anomaly_stage_scores_windows() {
    let model = workspace().join("edge-apps/models/vibration-ae/model.onnx");
    let env = Env::with(|c| {
        c.anomaly = vec![toml::from_str(&format!(
            r#"model = "{}"
               name = "pump"
               device = "serial:*"
               measurement = "vibration"
               window = 32
               threshold = 0.0016"#,
            model.display()
        ))
        .unwrap()]
    });
    let rt = env.start();
    let input: Vec<Reading> = (0..32)
        .map(|i| {
            Reading::new(
                "serial:pump-1".parse().unwrap(),
                Timestamp(i * 1000),
                vec![Measurement::float(
                    "vibration",
                    None,
                    if i % 4 == 0 { 4.0 } else { 0.0 },
                )],
            )
        })
        .collect();
    let p = rt.handle.process(vec![input]).await.unwrap();
    assert_eq!(p.groups[0].len(), 32);
    let r = p
        .derived
        .iter()
        .find(|r| float(r, "anomaly_score").is_some())
        .expect("score");
    assert_eq!(r.device.as_str(), "serial:pump-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_store_survives_restart() {
    let env = Env::new();
    {
        let rt = env.start();
        rt.handle
            .deploy(bundle("threshold-alert", &env.key))
            .await
            .unwrap();
        let p = rt
            .handle
            .process(vec![vec![temp("coap:a", SEC, 35.0)]])
            .await
            .unwrap();
        assert_eq!(p.derived.iter().filter(|r| is_alert(r)).count(), 1);
        drop(rt.handle);
        rt.thread.join();
    }
    let rt = env.start();
    // The app remembers the device is already above the threshold.
    let p = rt
        .handle
        .process(vec![vec![temp("coap:a", 2 * SEC, 36.0)]])
        .await
        .unwrap();
    assert_eq!(
        p.derived.iter().filter(|r| is_alert(r)).count(),
        0,
        "{:?}",
        p.derived
    );
    assert!(rt.handle.list()[0].kv_bytes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_a_window_app_flushes_its_window_once() {
    let env = Env::new();
    let mut rt = env.start();
    let long = |v: &'static str| {
        move |t: &mut toml::Table| {
            set(t, &["delivery", "window_seconds"], 3600);
            set(t, &["app", "version"], v);
        }
    };
    rt.handle
        .deploy(bundle_with("downsample", &env.key, long("1.0.0")))
        .await
        .unwrap();
    let three: Vec<Reading> = (0..3).map(|i| temp("coap:a", i * SEC, 10.0)).collect();
    rt.handle.process(vec![three]).await.unwrap();
    rt.handle
        .deploy(bundle_with("downsample", &env.key, long("1.1.0")))
        .await
        .unwrap();
    let d = next_derived(&mut rt, Duration::from_secs(5))
        .await
        .expect("old window flushed");
    let agg = d
        .readings
        .iter()
        .find(|r| float(r, "temperature_count").is_some())
        .unwrap();
    assert_eq!(float(agg, "temperature_count"), Some(3.0));
    rt.handle.committed(d.token.unwrap()).await;
    // The new version's window holds only what came after the swap.
    let two: Vec<Reading> = (3..5).map(|i| temp("coap:a", i * SEC, 20.0)).collect();
    rt.handle.process(vec![two]).await.unwrap();
    rt.handle.remove("downsample").await.unwrap();
    let d = next_derived(&mut rt, Duration::from_secs(5))
        .await
        .expect("flushed on remove");
    let agg = d
        .readings
        .iter()
        .find(|r| float(r, "temperature_count").is_some())
        .unwrap();
    assert_eq!(float(agg, "temperature_count"), Some(2.0), "{d:?}");
    assert_eq!(float(agg, "temperature_mean"), Some(20.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_output_not_confirmed_before_a_crash_is_produced_again() {
    let env = Env::new();
    let by_count = |t: &mut toml::Table| {
        set(t, &["delivery", "window_seconds"], 0);
        set(t, &["delivery", "window_readings"], 2);
    };
    {
        let rt = env.start();
        rt.handle
            .deploy(bundle_with("downsample", &env.key, by_count))
            .await
            .unwrap();
        let p = rt
            .handle
            .process(vec![vec![
                temp("coap:a", SEC, 1.0),
                temp("coap:a", 2 * SEC, 3.0),
            ]])
            .await
            .unwrap();
        assert_eq!(float(&p.derived[0], "temperature_mean"), Some(2.0));
        // The writer never confirms (as if gatewayd died before its commit).
        assert!(p.token.is_some());
        drop(rt.handle);
        rt.thread.join();
    }
    let mut rt = env.start();
    let d = next_derived(&mut rt, Duration::from_secs(5))
        .await
        .expect("re-produced");
    assert_eq!(float(&d.readings[0], "temperature_mean"), Some(2.0));
    rt.handle.committed(d.token.unwrap()).await;
    // Confirmed now: a further restart produces nothing.
    drop(rt.handle);
    rt.thread.join();
    let mut rt = env.start();
    assert!(next_derived(&mut rt, Duration::from_millis(1500))
        .await
        .is_none());
}
