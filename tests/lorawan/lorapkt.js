// Builds and checks LoRaWAN 1.0.x frames with lora-packet, an independent
// implementation, for gatewayd's end-to-end tests.
// Usage: node lorapkt.js '<json command>'  ->  one JSON object on stdout.
"use strict";
const lp = require("lora-packet");

const hex = (s) => Buffer.from(s, "hex");
const cmd = JSON.parse(process.argv[2]);
let out;
switch (cmd.op) {
  case "join_request": {
    const p = lp.fromFields(
      {
        MType: "Join Request",
        AppEUI: hex(cmd.join_eui),
        DevEUI: hex(cmd.dev_eui),
        DevNonce: hex(cmd.dev_nonce),
      },
      null,
      null,
      hex(cmd.app_key),
    );
    out = { phy: p.getPHYPayload().toString("hex") };
    break;
  }
  case "join_accept": {
    const appKey = hex(cmd.app_key);
    const enc = lp.fromWire(hex(cmd.phy));
    const ja = lp.fromWire(lp.decryptJoinAccept(enc, appKey));
    const micOk = lp.verifyMIC(ja, null, appKey);
    const keys = lp.generateSessionKeys(appKey, ja.NetID, ja.AppNonce, hex(cmd.dev_nonce));
    out = {
      mtype: ja.getMType(),
      mic_ok: micOk,
      dev_addr: ja.DevAddr.toString("hex"),
      net_id: ja.NetID.toString("hex"),
      nwk_s_key: keys.NwkSKey.toString("hex"),
      app_s_key: keys.AppSKey.toString("hex"),
    };
    break;
  }
  case "data_up": {
    const p = lp.fromFields(
      {
        MType: cmd.confirmed ? "Confirmed Data Up" : "Unconfirmed Data Up",
        DevAddr: hex(cmd.dev_addr),
        FCnt: cmd.fcnt,
        FPort: cmd.fport,
        FOpts: cmd.fopts ? hex(cmd.fopts) : undefined,
        FCtrl: cmd.ack ? { ADR: false, ADRACKReq: false, ACK: true, ClassB: false } : undefined,
        payload: hex(cmd.payload),
      },
      hex(cmd.app_s_key),
      hex(cmd.nwk_s_key),
    );
    out = { phy: p.getPHYPayload().toString("hex") };
    break;
  }
  case "data_down": {
    const p = lp.fromWire(hex(cmd.phy));
    out = {
      mtype: p.getMType(),
      mic_ok: lp.verifyMIC(p, hex(cmd.nwk_s_key)),
      ack: p.getFCtrlACK(),
      fcnt: p.getFCnt(),
      dev_addr: p.DevAddr.toString("hex"),
      fopts: p.FOpts ? p.FOpts.toString("hex") : "",
      fpending: p.getFCtrlFPending(),
      fport: p.getFPort(),
    };
    // With the AppSKey: the decrypted FRMPayload of an application port.
    if (cmd.app_s_key && out.fport) {
      out.payload = lp.decrypt(p, hex(cmd.app_s_key), hex(cmd.nwk_s_key)).toString("hex");
    }
    break;
  }
  default:
    throw new Error("unknown op " + cmd.op);
}
process.stdout.write(JSON.stringify(out) + "\n");
