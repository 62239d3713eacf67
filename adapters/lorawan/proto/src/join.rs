//! OTAA joins (LoRaWAN 1.0.x §6.2).
//!
//! [`handle_join_request`] checks the JoinEUI, verifies the MIC with the
//! AppKey, refuses a DevNonce the device already used, derives the session
//! keys and builds the encrypted JoinAccept (no CFList):
//!
//! * NwkSKey = aes128_encrypt(AppKey, 0x01 | JoinNonce | NetID | DevNonce | pad₁₆)
//! * AppSKey = aes128_encrypt(AppKey, 0x02 | JoinNonce | NetID | DevNonce | pad₁₆)
//! * JoinAccept = MHDR | aes128_decrypt(AppKey, JoinNonce | NetID | DevAddr |
//!   DLSettings | RxDelay | MIC), MIC = cmac(AppKey, MHDR | … | RxDelay)[0..4]
//!
//! All multi-byte fields little-endian on air. The JoinAccept is built with
//! the `lorawan` crate's `JoinAcceptCreator`; the keys are derived by the
//! crate from that very JoinAccept decrypted again (as the device will),
//! so the keys and the frame cannot disagree.

use std::collections::BTreeSet;

use lorawan::creator::JoinAcceptCreator;
use lorawan::default_crypto::DefaultFactory;
use lorawan::keys::{AppKey, AES128};
use lorawan::parser::{DecryptedJoinAcceptPayload, DevNonce, JoinRequestPayload};

use crate::session::Session;
use crate::types::{DevAddr, Eui64};
use crate::uplink::{classify, Frame};

/// A parsed JoinRequest (not yet authenticated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinRequest {
    /// JoinEUI (AppEUI).
    pub join_eui: Eui64,
    /// DevEUI.
    pub dev_eui: Eui64,
    /// DevNonce, as the little-endian number on air.
    pub dev_nonce: u16,
}

/// What the network decides for the new session. The caller chooses the
/// DevAddr (NetID prefix, collision avoidance) and the JoinNonce (a
/// per-device counter; 1.0.x only needs it to differ between joins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinParams {
    /// The device's new address.
    pub dev_addr: DevAddr,
    /// JoinNonce (AppNonce), 24 bits.
    pub join_nonce: u32,
    /// NetID, 24 bits.
    pub net_id: u32,
    /// RX1DROffset for DLSettings, 0..=7 (the region may allow fewer).
    pub rx1_dr_offset: u8,
    /// RX2 data rate for DLSettings, 0..=15.
    pub rx2_dr: u8,
    /// RxDelay in seconds, 0..=15 (0 means 1).
    pub rx1_delay_s: u8,
}

/// An accepted join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The request.
    pub request: JoinRequest,
    /// The new session (counters at zero, `used_dev_nonces` including this
    /// request's DevNonce).
    pub session: Session,
    /// The encrypted JoinAccept PHYPayload, ready to send.
    pub join_accept: Vec<u8>,
}

/// Why a JoinRequest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// Not a 23-byte LoRaWAN R1 JoinRequest.
    #[error("not a JoinRequest")]
    NotJoinRequest,
    /// The JoinEUI differs from the device's registered one.
    #[error("JoinEUI {got} does not match the device's {expected}")]
    JoinEuiMismatch {
        /// Registered JoinEUI.
        expected: Eui64,
        /// The request's JoinEUI.
        got: Eui64,
    },
    /// The MIC does not verify with the AppKey.
    #[error("JoinRequest MIC check failed")]
    Mic,
    /// This DevNonce was already used by the device (replay, or a device
    /// whose nonce generator repeats).
    #[error("DevNonce {dev_nonce:#06x} already used")]
    DevNonceReused {
        /// The nonce.
        dev_nonce: u16,
    },
    /// A [`JoinParams`] field out of range.
    #[error("invalid join parameter: {0}")]
    InvalidParams(&'static str),
}

/// Parses a JoinRequest without authenticating it.
pub fn parse_join_request(phy: &[u8]) -> Result<JoinRequest, JoinError> {
    match classify(phy) {
        Ok(Frame::JoinRequest {
            join_eui,
            dev_eui,
            dev_nonce,
        }) => Ok(JoinRequest {
            join_eui,
            dev_eui,
            dev_nonce,
        }),
        _ => Err(JoinError::NotJoinRequest),
    }
}

/// Authenticates a JoinRequest and builds the session and JoinAccept.
///
/// `join_eui` and `app_key` are the device's registration; `used_dev_nonces`
/// every DevNonce of its earlier accepted joins. Nothing is changed on
/// error; on success the caller stores [`Joined::session`] (which carries
/// the updated nonce set) and sends [`Joined::join_accept`].
pub fn handle_join_request(
    phy: &[u8],
    join_eui: Eui64,
    app_key: &[u8; 16],
    used_dev_nonces: &BTreeSet<u16>,
    params: &JoinParams,
) -> Result<Joined, JoinError> {
    let request = parse_join_request(phy)?;
    if request.join_eui != join_eui {
        return Err(JoinError::JoinEuiMismatch {
            expected: join_eui,
            got: request.join_eui,
        });
    }
    let frame = JoinRequestPayload::new(phy).map_err(|_| JoinError::NotJoinRequest)?;
    if !frame.validate_mic(&AES128(*app_key)) {
        return Err(JoinError::Mic);
    }
    if used_dev_nonces.contains(&request.dev_nonce) {
        return Err(JoinError::DevNonceReused {
            dev_nonce: request.dev_nonce,
        });
    }
    if params.join_nonce > 0xFF_FFFF {
        return Err(JoinError::InvalidParams("join_nonce exceeds 24 bits"));
    }
    if params.net_id > 0xFF_FFFF {
        return Err(JoinError::InvalidParams("net_id exceeds 24 bits"));
    }
    if params.rx1_dr_offset > 7 || params.rx2_dr > 15 || params.rx1_delay_s > 15 {
        return Err(JoinError::InvalidParams(
            "DLSettings or RxDelay out of range",
        ));
    }

    let join_nonce = params.join_nonce.to_le_bytes();
    let join_nonce = [join_nonce[0], join_nonce[1], join_nonce[2]];
    let net_id = params.net_id.to_le_bytes();
    let net_id = [net_id[0], net_id[1], net_id[2]];
    let dev_addr = params.dev_addr.to_le_bytes();
    let mut creator = JoinAcceptCreator::with_options([0u8; 17], DefaultFactory)
        .map_err(|_| JoinError::InvalidParams("JoinAccept buffer"))?;
    creator
        .set_app_nonce(&join_nonce)
        .set_net_id(&net_id)
        .set_dev_addr(&dev_addr)
        .set_dl_settings((params.rx1_dr_offset << 4) | params.rx2_dr)
        .set_rx_delay(params.rx1_delay_s);
    let join_accept = creator
        .build(&AES128(*app_key))
        .map_err(|_| JoinError::InvalidParams("JoinAccept buffer"))?
        .to_vec();

    // Derive the keys from the JoinAccept as the device will see it.
    let key = AppKey::from(*app_key);
    let decrypted = DecryptedJoinAcceptPayload::new(join_accept.clone(), &key)
        .map_err(|_| JoinError::InvalidParams("built JoinAccept does not verify"))?;
    let nonce = DevNonce::from(request.dev_nonce.to_le_bytes());
    let mut nwk_s_key = [0u8; 16];
    nwk_s_key.copy_from_slice(decrypted.derive_newskey(&nonce, &key).as_ref());
    let mut app_s_key = [0u8; 16];
    app_s_key.copy_from_slice(decrypted.derive_appskey(&nonce, &key).as_ref());

    let mut used = used_dev_nonces.clone();
    used.insert(request.dev_nonce);
    Ok(Joined {
        request,
        session: Session {
            dev_addr: params.dev_addr.0,
            nwk_s_key,
            app_s_key,
            fcnt_up: None,
            fcnt_down: 0,
            rx1_dr_offset: params.rx1_dr_offset,
            rx2_dr: params.rx2_dr,
            rx1_delay_s: params.rx1_delay_s.max(1),
            join_nonce: params.join_nonce,
            used_dev_nonces: used,
            last_uplink_mic: None,
        },
        join_accept,
    })
}
