//! LoRaWAN end to end: frames built and checked by an independent
//! implementation (the npm package `lora-packet`, run with node from
//! `tests/lorawan/lorapkt.js`), carried in Semtech UDP datagrams that this
//! test writes by hand (as `lora_pkt_fwd` would) over real UDP to the real
//! gatewayd, whose readings are read back from cloud-bridge's HTTP API.
//!
//! Needs `node` and `tests/lorawan/node_modules` (`make deps` runs
//! `npm ci` there).

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Cloud, Gateway};
use gatewayd_tests::ports::free_udp_port;
use gatewayd_tests::require;
use serde_json::{json, Value as J};

const APP_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const OTAA_EUI: &str = "70b3d57ed0000001";
const JOIN_EUI: &str = "0000000000000001";
const ABP_EUI: &str = "70b3d57ed0000002";
const ABP_ADDR: &str = "26011f00";
const ABP_NWK: &str = "000102030405060708090a0b0c0d0e0f";
const ABP_APP: &str = "0f0e0d0c0b0a09080706050403020100";
const GW_EUI: [u8; 8] = [0xaa, 0x55, 0x5a, 0, 0, 0, 0, 1];

/// Runs `lorapkt.js` with one command.
fn lorapkt(cmd: J) -> J {
    require::command("node");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("lorawan");
    assert!(
        dir.join("node_modules/lora-packet").is_dir(),
        "lora-packet not installed: run `make deps` (npm ci in tests/lorawan)"
    );
    let out = Command::new(require::path("node"))
        .arg(dir.join("lorapkt.js"))
        .arg(cmd.to_string())
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "lorapkt {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A packet forwarder as `lora_pkt_fwd` behaves: PUSH_DATA from one
/// socket, PULL_DATA (and downlinks) on another.
struct Forwarder {
    push: UdpSocket,
    pull: UdpSocket,
    server: String,
    token: u16,
    tmst: u32,
}

impl Forwarder {
    fn new(port: u16) -> Forwarder {
        let push = UdpSocket::bind("127.0.0.1:0").unwrap();
        let pull = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&push, &pull] {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        Forwarder {
            push,
            pull,
            server: format!("127.0.0.1:{port}"),
            token: 1,
            tmst: 1_000_000,
        }
    }

    fn header(&mut self, id: u8) -> (Vec<u8>, [u8; 2]) {
        self.token = self.token.wrapping_add(1);
        let t = self.token.to_be_bytes();
        let mut d = vec![2, t[0], t[1], id];
        d.extend_from_slice(&GW_EUI);
        (d, t)
    }

    /// PULL_DATA until PULL_ACK (the source may still be binding).
    fn pull_data(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        self.pull
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        loop {
            let (d, t) = self.header(2);
            self.pull.send_to(&d, &self.server).unwrap();
            let mut buf = [0u8; 64];
            if let Ok(n) = self.pull.recv(&mut buf) {
                if n == 4 && buf[1..3] == t && buf[3] == 4 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "no PULL_ACK");
        }
        self.pull
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }

    /// One rxpk in a PUSH_DATA; waits for its PUSH_ACK.
    fn uplink(&mut self, phy_hex: &str) {
        let phy = hex::decode(phy_hex).unwrap();
        self.tmst = self.tmst.wrapping_add(10_000_000);
        let body = json!({"rxpk": [{
            "tmst": self.tmst, "chan": 0, "rfch": 0, "freq": 868.1, "stat": 1,
            "modu": "LORA", "datr": "SF7BW125", "codr": "4/5",
            "rssi": -57, "lsnr": 9.5, "size": phy.len(),
            "data": base64::engine::general_purpose::STANDARD.encode(&phy),
        }]});
        let (mut d, t) = self.header(0);
        d.extend_from_slice(body.to_string().as_bytes());
        self.push.send_to(&d, &self.server).unwrap();
        let mut buf = [0u8; 64];
        let n = self.push.recv(&mut buf).expect("PUSH_ACK");
        assert_eq!(&buf[..n], &[2, t[0], t[1], 1], "PUSH_ACK with our token");
    }

    /// The next PULL_RESP's txpk; answers it with a TX_ACK.
    fn downlink(&mut self) -> J {
        let mut buf = vec![0u8; 4096];
        let n = self.pull.recv(&mut buf).expect("PULL_RESP");
        assert_eq!(buf[0], 2);
        assert_eq!(buf[3], 3, "PULL_RESP");
        let body: J = serde_json::from_slice(&buf[4..n]).unwrap();
        let mut ack = vec![2, buf[1], buf[2], 5];
        ack.extend_from_slice(&GW_EUI);
        self.pull.send_to(&ack, &self.server).unwrap();
        body["txpk"].clone()
    }
}

fn phy_of(txpk: &J) -> String {
    let b = base64::engine::general_purpose::STANDARD
        .decode(txpk["data"].as_str().unwrap())
        .unwrap();
    hex::encode(b)
}

fn measurement(r: &J, name: &str) -> Option<f64> {
    r["measurements"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)?["value"]
        .as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_packet_frames_join_and_reach_the_cloud() {
    let cloud = Cloud::start(None, "cloud-lora");
    let broker = format!("mqtt://127.0.0.1:{}", cloud.broker_port.unwrap());
    let lora_port = free_udp_port();
    let mut gw = Gateway::new("gw-lora", &broker);
    gw.extra = format!(
        r#"
[sources.lora]
kind = "lorawan"
bind = "127.0.0.1:{lora_port}"
region = "EU868"
devices = [
  {{ dev_eui = "{OTAA_EUI}", join_eui = "{JOIN_EUI}", app_key = "{APP_KEY}" }},
  {{ dev_eui = "{ABP_EUI}", dev_addr = "{ABP_ADDR}", nwk_s_key = "{ABP_NWK}", app_s_key = "{ABP_APP}" }},
]
"#
    );
    let child = gw.start();
    let mut fwd = Forwarder::new(lora_port);
    fwd.pull_data();

    // OTAA: JoinRequest from lora-packet; the JoinAccept comes back in a
    // PULL_RESP, 5 s after the uplink (RX1 of the join), and lora-packet
    // decrypts it and checks its MIC.
    let dev_nonce = "0a0b";
    let jr = lorapkt(
        json!({"op": "join_request", "app_key": APP_KEY, "dev_eui": OTAA_EUI,
        "join_eui": JOIN_EUI, "dev_nonce": dev_nonce}),
    );
    fwd.uplink(jr["phy"].as_str().unwrap());
    let txpk = fwd.downlink();
    assert_eq!(
        txpk["tmst"].as_u64().unwrap(),
        u64::from(fwd.tmst) + 5_000_000,
        "{txpk}"
    );
    assert_eq!(txpk["ipol"], true);
    let ja = lorapkt(
        json!({"op": "join_accept", "phy": phy_of(&txpk), "app_key": APP_KEY,
        "dev_nonce": dev_nonce}),
    );
    assert_eq!(ja["mtype"], "Join Accept", "{ja}");
    assert_eq!(
        ja["mic_ok"], true,
        "lora-packet verifies gatewayd's JoinAccept MIC: {ja}"
    );
    let (addr, nwk, app) = (
        ja["dev_addr"].as_str().unwrap().to_owned(),
        ja["nwk_s_key"].as_str().unwrap().to_owned(),
        ja["app_s_key"].as_str().unwrap().to_owned(),
    );

    // An uplink on the derived session: Cayenne temperature 27.2 °C on
    // channel 1, confirmed, so gatewayd answers with an ACK.
    let up = lorapkt(
        json!({"op": "data_up", "dev_addr": addr, "fcnt": 1, "fport": 2,
        "payload": "0167011001680a", "confirmed": true, "nwk_s_key": nwk, "app_s_key": app}),
    );
    fwd.uplink(up["phy"].as_str().unwrap());
    let txpk = fwd.downlink();
    assert_eq!(
        txpk["tmst"].as_u64().unwrap(),
        u64::from(fwd.tmst) + 1_000_000,
        "RX1: {txpk}"
    );
    let down = lorapkt(json!({"op": "data_down", "phy": phy_of(&txpk), "nwk_s_key": nwk}));
    assert_eq!(down["mic_ok"], true, "{down}");
    assert_eq!(down["ack"], true, "{down}");
    assert_eq!(down["dev_addr"], addr);
    let device = format!("lora:{}", OTAA_EUI.to_uppercase());
    let r = cloud.wait_readings(&device, 1, Some(&child)).await;
    assert_eq!(measurement(&r[0], "temperature_1"), Some(27.2), "{}", r[0]);
    assert_eq!(measurement(&r[0], "humidity_1"), Some(5.0), "{}", r[0]);
    assert_eq!(r[0]["meta"]["rssi"], -57.0, "{}", r[0]);
    assert_eq!(r[0]["meta"]["snr"], 9.5, "{}", r[0]);

    // ABP from config, with a MAC command (LinkCheckReq) in FOpts.
    let up = lorapkt(
        json!({"op": "data_up", "dev_addr": ABP_ADDR, "fcnt": 7, "fport": 1,
        "fopts": "02", "payload": "0367011005670a0b", "nwk_s_key": ABP_NWK, "app_s_key": ABP_APP}),
    );
    let abp_phy = up["phy"].as_str().unwrap().to_owned();
    fwd.uplink(&abp_phy);
    let txpk = fwd.downlink();
    let down = lorapkt(json!({"op": "data_down", "phy": phy_of(&txpk), "nwk_s_key": ABP_NWK}));
    assert_eq!(down["mic_ok"], true, "{down}");
    assert!(
        down["fopts"].as_str().unwrap().starts_with("02"),
        "LinkCheckAns: {down}"
    );
    let abp_device = format!("lora:{}", ABP_EUI.to_uppercase());
    let r = cloud.wait_readings(&abp_device, 1, Some(&child)).await;
    assert_eq!(measurement(&r[0], "temperature_3"), Some(27.2), "{}", r[0]);

    // A replay of that frame and one with a wrong MIC: no reading.
    fwd.uplink(&abp_phy);
    let bad = lorapkt(
        json!({"op": "data_up", "dev_addr": ABP_ADDR, "fcnt": 8, "fport": 1,
        "payload": "0367011005670a0b", "nwk_s_key": APP_KEY, "app_s_key": ABP_APP}),
    );
    fwd.uplink(bad["phy"].as_str().unwrap());
    // Garbage and a truncated datagram: answered with nothing, no crash.
    fwd.push.send_to(&[2, 0, 1], &fwd.server).unwrap();
    fwd.push
        .send_to(b"\x02\x00\x02\x00garbage", &fwd.server)
        .unwrap();
    // A good frame after them still arrives, and it is the only new one.
    let up = lorapkt(
        json!({"op": "data_up", "dev_addr": ABP_ADDR, "fcnt": 9, "fport": 1,
        "payload": "0367012c", "nwk_s_key": ABP_NWK, "app_s_key": ABP_APP}),
    );
    fwd.uplink(up["phy"].as_str().unwrap());
    let r = cloud.wait_readings(&abp_device, 2, Some(&child)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r2 = cloud.readings(&abp_device).await.unwrap();
    assert_eq!(r2.len(), 2, "replay and bad MIC made no reading: {r:?}");
    assert!(r2
        .iter()
        .any(|x| measurement(x, "temperature_3") == Some(30.0)));
    assert!(child.is_running(), "{}", child.log());
}

/// `lora-packet`'s view of a downlink: MIC checked with the NwkSKey, the
/// FRMPayload decrypted with the AppSKey.
fn device_sees(txpk: &J, nwk: &str, app: &str) -> J {
    lorapkt(json!({"op": "data_down", "phy": phy_of(txpk), "nwk_s_key": nwk, "app_s_key": app}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downlink_queued_with_gatewayctl_reaches_lora_packet_and_sessions_survive_a_crash() {
    use common::apps::Publisher;
    use common::bus::{ctl_json, ctl_ok};
    use gatewayd_tests::dbus::{config_file, DbusDaemon};

    let cloud = Cloud::start(None, "cloud-lora-dl");
    let broker = format!("mqtt://127.0.0.1:{}", cloud.broker_port.unwrap());
    let bus = DbusDaemon::start(&config_file("open-bus.conf")).expect("private bus");
    let b = bus.address.as_str();
    let lora_port = free_udp_port();
    let mut gw = Gateway::new("gw-lora-dl", &broker);
    gw.dbus = Some(bus.address.clone());
    // The ABP device's profile names the lora-codec edge app, deployed
    // below: its raw payloads are decoded by that app, not by gatewayd.
    let publisher = Publisher::new();
    gw.extra = format!(
        r#"
[sources.lora]
kind = "lorawan"
bind = "127.0.0.1:{lora_port}"
devices = [
  {{ dev_eui = "{OTAA_EUI}", join_eui = "{JOIN_EUI}", app_key = "{APP_KEY}" }},
  {{ dev_eui = "{ABP_EUI}", dev_addr = "{ABP_ADDR}", nwk_s_key = "{ABP_NWK}", app_s_key = "{ABP_APP}", profile = "lora-codec" }},
]

[edge_apps]
trusted_keys = [{:?}]
"#,
        publisher.pub_path
    );
    let mut child = gw.start();
    let mut fwd = Forwarder::new(lora_port);
    fwd.pull_data();

    // The codec app, as shipped (it selects profile "lora-codec").
    let codec = publisher.bundle("lora-codec", |_| {});
    ctl_ok(b, &["apps", "deploy", codec.to_str().unwrap()]);
    let up = lorapkt(
        json!({"op": "data_up", "dev_addr": ABP_ADDR, "fcnt": 1, "fport": 3,
        "payload": "00eb370ce4", "nwk_s_key": ABP_NWK, "app_s_key": ABP_APP}),
    );
    fwd.uplink(up["phy"].as_str().unwrap());
    let abp_device = format!("lora:{}", ABP_EUI.to_uppercase());
    let r = cloud.wait_readings(&abp_device, 1, Some(&child)).await;
    assert_eq!(measurement(&r[0], "temperature"), Some(23.5), "{}", r[0]);
    assert_eq!(measurement(&r[0], "humidity"), Some(55.0), "{}", r[0]);
    assert_eq!(r[0]["meta"]["extra"]["fport"], "3", "{}", r[0]);
    assert_eq!(r[0]["meta"]["extra"]["profile"], "lora-codec", "{}", r[0]);

    // Join, then one uplink on the new session.
    let dev_nonce = "1a2b";
    let jr = lorapkt(
        json!({"op": "join_request", "app_key": APP_KEY, "dev_eui": OTAA_EUI,
        "join_eui": JOIN_EUI, "dev_nonce": dev_nonce}),
    );
    fwd.uplink(jr["phy"].as_str().unwrap());
    let ja = lorapkt(json!({"op": "join_accept", "phy": phy_of(&fwd.downlink()),
        "app_key": APP_KEY, "dev_nonce": dev_nonce}));
    assert_eq!(ja["mic_ok"], true, "{ja}");
    let addr = ja["dev_addr"].as_str().unwrap().to_owned();
    let nwk = ja["nwk_s_key"].as_str().unwrap().to_owned();
    let app = ja["app_s_key"].as_str().unwrap().to_owned();
    let up = |fcnt: u32, ack: bool| {
        let f = lorapkt(
            json!({"op": "data_up", "dev_addr": addr, "fcnt": fcnt, "fport": 2,
            "payload": "0167011001680a", "ack": ack, "nwk_s_key": nwk, "app_s_key": app}),
        );
        f["phy"].as_str().unwrap().to_owned()
    };
    fwd.uplink(&up(1, false));
    let device = format!("lora:{}", OTAA_EUI.to_uppercase());
    let r = cloud.wait_readings(&device, 1, Some(&child)).await;
    assert_eq!(
        measurement(&r[0], "temperature_1"),
        Some(27.2),
        "profile cayenne: decoded by gatewayd, not by the codec app: {}",
        r[0]
    );

    // The operator queues a confirmed downlink; the device's next uplink
    // gets it in RX1, and lora-packet decrypts it.
    let queued = ctl_json(
        b,
        &[
            "lora",
            "downlinks",
            "send",
            OTAA_EUI,
            "--fport",
            "9",
            "--hex",
            "cafe01",
            "--confirmed",
        ],
    );
    let id = queued["queued"].as_u64().expect("an id");
    let list = ctl_json(b, &["lora", "downlinks", "list", OTAA_EUI]);
    assert_eq!(list[0]["id"], id, "{list}");
    assert_eq!(list[0]["payload"], "cafe01", "{list}");
    // The source picks the row up within its 1 s housekeeping.
    common::bus::eventually("the downlink loaded", || {
        let s = ctl_json(b, &["lora", "stats"]);
        (s["counters"]["app_downlinks_queued"] == 1).then_some(())
    });
    fwd.uplink(&up(2, false));
    let txpk = fwd.downlink();
    assert_eq!(
        txpk["tmst"].as_u64().unwrap(),
        u64::from(fwd.tmst) + 1_000_000,
        "RX1"
    );
    let seen = device_sees(&txpk, &nwk, &app);
    assert_eq!(seen["mic_ok"], true, "{seen}");
    assert_eq!(seen["mtype"], "Confirmed Data Down", "{seen}");
    assert_eq!(seen["fport"], 9, "{seen}");
    assert_eq!(seen["payload"], "cafe01", "{seen}");
    let fcnt_down_before = seen["fcnt"].as_u64().unwrap();
    cloud.wait_readings(&device, 2, Some(&child)).await;

    // Operators see the forwarder and the counters.
    let fw = ctl_json(b, &["lora", "forwarders"]);
    assert_eq!(fw[0]["eui"], "AA555A0000000001", "{fw}");
    assert_eq!(fw[0]["alive"], true, "{fw}");
    let table = ctl_ok(b, &["lora", "stats"]);
    assert!(table.contains("app_downlinks_queued"), "{table}");

    // A crash (SIGKILL), and gatewayd back on the same state.
    child.kill9();
    let child = gw.start();
    fwd.pull_data();
    // The session survived: no rejoin. Its frame counter too: the replay
    // of uplink 2 is refused, and the confirmed downlink (unacknowledged)
    // is still queued.
    fwd.uplink(&up(2, false));
    let list = ctl_json(b, &["lora", "downlinks", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    // Uplink 3 has no ACK bit: the item goes again, with a frame counter
    // never used before the crash.
    fwd.uplink(&up(3, false));
    let seen = device_sees(&fwd.downlink(), &nwk, &app);
    assert_eq!(seen["payload"], "cafe01", "{seen}");
    assert!(
        seen["fcnt"].as_u64().unwrap() > fcnt_down_before,
        "FCntDown after the crash {seen} > {fcnt_down_before}"
    );
    // Uplink 4 carries the ACK: the queue empties.
    fwd.uplink(&up(4, true));
    common::bus::eventually("the acknowledged downlink gone", || {
        let l = ctl_json(b, &["lora", "downlinks", "list"]);
        (l.as_array().map(Vec::len) == Some(0)).then_some(())
    });
    let r = cloud.wait_readings(&device, 4, Some(&child)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = cloud.readings(&device).await.unwrap();
    let mut fcnts: Vec<_> = all
        .iter()
        .map(|x| {
            x["meta"]["extra"]["fcnt"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    fcnts.sort();
    assert_eq!(
        fcnts,
        ["1", "2", "3", "4"],
        "the replayed 2 made no reading: {r:?}"
    );
    let s = ctl_json(b, &["lora", "stats"]);
    assert!(
        s["rejected"]["replay"].as_u64().unwrap_or(0)
            + s["rejected"]["repeated"].as_u64().unwrap_or(0)
            >= 1,
        "{s}"
    );

    // Queued downlinks the operator changes their mind about: cleared.
    for payload in ["01", "02"] {
        let args = [
            "lora",
            "downlinks",
            "send",
            OTAA_EUI,
            "--fport",
            "3",
            "--hex",
            payload,
        ];
        ctl_json(b, &args);
    }
    let list = ctl_json(b, &["lora", "downlinks", "list", OTAA_EUI]);
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let cleared = ctl_json(b, &["lora", "downlinks", "clear", OTAA_EUI]);
    assert_eq!(cleared["removed"], 2, "{cleared}");
    let list = ctl_json(b, &["lora", "downlinks", "list", OTAA_EUI]);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    assert!(child.is_running(), "{}", child.log());
}
