#!/usr/bin/env python3
"""Independent LoRaWAN 1.0.x test vectors for tests/frames.rs.

Written from the LoRaWAN 1.0.3 specification (§4.3.3 FRMPayload encryption,
§4.4 MIC, §6.2.4-6.2.5 JoinRequest/JoinAccept, §6.2.5 session keys) with the
Python `cryptography` package for AES-128 and AES-CMAC; it shares no code
with the `lorawan` crate. Run it to print the vectors:

    python3 tests/vectors/gen_vectors.py
"""
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def aes_enc(key, block):
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(block) + e.finalize()


def aes_dec(key, block):
    d = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return d.update(block) + d.finalize()


def cmac4(key, msg):
    c = cmac.CMAC(algorithms.AES(key))
    c.update(msg)
    return c.finalize()[:4]


def le(n, width):
    return n.to_bytes(width, "little")


def frm_crypt(key, direction, dev_addr, fcnt, data):
    out = bytearray()
    for i in range((len(data) + 15) // 16):
        a = bytes([1, 0, 0, 0, 0, direction]) + le(dev_addr, 4) + le(fcnt, 4) + bytes([0, i + 1])
        s = aes_enc(key, a)
        chunk = data[16 * i:16 * i + 16]
        out += bytes(x ^ y for x, y in zip(chunk, s))
    return bytes(out)


def data_frame(mtype, direction, dev_addr, fctrl, fcnt, fopts, fport, payload, nwk, app):
    mhdr = bytes([mtype << 5])
    fctrl |= len(fopts)
    fhdr = le(dev_addr, 4) + bytes([fctrl]) + le(fcnt & 0xFFFF, 2) + fopts
    body = fhdr
    if fport is not None:
        key = nwk if fport == 0 else app
        body += bytes([fport]) + frm_crypt(key, direction, dev_addr, fcnt, payload)
    msg = mhdr + body
    b0 = bytes([0x49, 0, 0, 0, 0, direction]) + le(dev_addr, 4) + le(fcnt, 4) + bytes([0, len(msg)])
    return msg + cmac4(nwk, b0 + msg)


def rust(name, b):
    body = ", ".join(f"0x{x:02X}" for x in b)
    print(f"pub const {name}: [u8; {len(b)}] = [{body}];")


# --- join -----------------------------------------------------------------
APP_KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
JOIN_EUI = bytes.fromhex("70B3D57ED0000000")  # MSB first
DEV_EUI = bytes.fromhex("0004A30B001C0530")
DEV_NONCE = 0x1234
jr = bytes([0x00]) + JOIN_EUI[::-1] + DEV_EUI[::-1] + le(DEV_NONCE, 2)
jr += cmac4(APP_KEY, jr)
rust("JOIN_REQUEST", jr)

JOIN_NONCE = 0x000001
NET_ID = 0x000000
DEV_ADDR_J = 0x00ABCDEF
DL_SETTINGS = (0 << 4) | 0  # RX1DROffset 0, RX2 DR0
RX_DELAY = 1
mhdr = bytes([0x20])
fields = le(JOIN_NONCE, 3) + le(NET_ID, 3) + le(DEV_ADDR_J, 4) + bytes([DL_SETTINGS, RX_DELAY])
mic = cmac4(APP_KEY, mhdr + fields)
ja = mhdr + aes_dec(APP_KEY, fields + mic)
rust("JOIN_ACCEPT", ja)
pad = bytes(7)
base = le(JOIN_NONCE, 3) + le(NET_ID, 3) + le(DEV_NONCE, 2) + pad
rust("JOIN_NWK_S_KEY", aes_enc(APP_KEY, bytes([1]) + base))
rust("JOIN_APP_S_KEY", aes_enc(APP_KEY, bytes([2]) + base))

# --- data uplink with a 32-bit counter above 65535 ------------------------
NWK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
APP = bytes.fromhex("0F0E0D0C0B0A09080706050403020100")
DEV_ADDR = 0x26011BDA
FCNT = 0x0001_0005
cayenne = bytes.fromhex("03670110056700FF")
up = data_frame(0b100, 0, DEV_ADDR, 0x80, FCNT, bytes([0x02, 0x0D]), 10, cayenne, NWK, APP)
rust("UPLINK_CONFIRMED_FOPTS", up)

# FPort 0: MAC commands (LinkCheckReq, DevStatusAns 0xFE/-1) encrypted with the NwkSKey
up0 = data_frame(0b010, 0, DEV_ADDR, 0x00, 7, b"", 0, bytes([0x02, 0x06, 0xFE, 0x3F]), NWK, APP)
rust("UPLINK_FPORT0", up0)

# Invalid: FOpts (LinkCheckReq) *and* an FPort 0 payload (DeviceTimeReq), valid MIC, FCnt 8
bad = data_frame(0b010, 0, DEV_ADDR, 0x00, 8, bytes([0x02]), 0, bytes([0x0D]), NWK, APP)
rust("UPLINK_FOPTS_AND_FPORT0", bad)

# --- data downlink ----------------------------------------------------------
# Unconfirmed, ACK, FOpts LinkCheckAns(12, 3) + DeviceTimeAns(1284035218 s, 128/256),
# FPort 5 payload "hi", FCntDown 7.
fopts = bytes([0x02, 12, 3, 0x0D]) + le(1_284_035_218, 4) + bytes([128])
down = data_frame(0b011, 1, DEV_ADDR, 0x20, 7, fopts, 5, b"hi", NWK, APP)
rust("DOWNLINK_ACK_MAC_APP", down)
