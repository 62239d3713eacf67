//! The pure request-handling core of the CoAP server: bytes in, a decision
//! out. No sockets, no clocks (the caller passes `now`), no async; the
//! commit result is fed back in through [`ServerCore::finish`].
//!
//! A request goes through these named steps, each a small function that
//! either passes the request on or ends it with a response:
//!
//! ```text
//! parse_header → parse_packet → classify → dedup → check_options → route
//!   → check_method → check_content_format → check_size1 → reassemble_block1
//!   → check_size → decode_senml → validate_readings
//!   → (caller: submit → await_commit) → finish → respond
//! ```

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use gatewayd_core::{CommitError, Committed, SinkError};
use gatewayd_model::senml::{self, DeviceNaming, Limits, CONTENT_FORMAT_CBOR, CONTENT_FORMAT_JSON};
use gatewayd_model::{wire, DeviceId, Reading, Timestamp, Transport};

use crate::stats::{bump, CoapStats, RejectReason};

/// RFC 7252 §4.8.2: how long a message id identifies an exchange.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// Max-Age (seconds) sent with 5.03 Service Unavailable.
pub const RETRY_AFTER_SECS: u32 = 5;
/// Diagnostic payloads are cut to this many bytes.
pub const MAX_DIAGNOSTIC_BYTES: usize = 512;
/// Bytes a CoAP header, token and options may add around a Block1 payload;
/// used to pick the block size suggested in 4.13 answers.
const BLOCK_OVERHEAD: usize = 64;

/// CoAP option numbers (RFC 7252 §12.2, RFC 7959, RFC 7641, RFC 7967).
pub mod opt {
    pub const IF_MATCH: u16 = 1;
    pub const URI_HOST: u16 = 3;
    pub const OBSERVE: u16 = 6;
    pub const URI_PORT: u16 = 7;
    pub const URI_PATH: u16 = 11;
    pub const CONTENT_FORMAT: u16 = 12;
    pub const MAX_AGE: u16 = 14;
    pub const URI_QUERY: u16 = 15;
    pub const ACCEPT: u16 = 17;
    pub const BLOCK2: u16 = 23;
    pub const BLOCK1: u16 = 27;
    pub const SIZE2: u16 = 28;
    pub const PROXY_URI: u16 = 35;
    pub const PROXY_SCHEME: u16 = 39;
    pub const SIZE1: u16 = 60;
    pub const NO_RESPONSE: u16 = 258;
}

/// Content-format of link-format documents (`/.well-known/core`).
pub const CONTENT_FORMAT_LINK: u16 = 40;

/// Settings of the pure server core.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Uri-Path segments of the telemetry resource.
    pub path: Vec<String>,
    pub max_datagram_bytes: usize,
    pub max_payload_bytes: usize,
    pub max_block_transfers: usize,
    pub dedup_capacity: usize,
    pub limits: Limits,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let c = crate::CoapConfig::default();
        ServerSettings {
            path: vec![c.path],
            max_datagram_bytes: c.max_datagram_bytes,
            max_payload_bytes: c.max_payload_bytes,
            max_block_transfers: c.max_block_transfers,
            dedup_capacity: c.dedup_capacity,
            limits: c.limits.into(),
        }
    }
}

// ------------------------------------------------------------ helpers ---

/// Minimal big-endian encoding of a CoAP uint option (RFC 7252 §3.2).
pub fn uint_option(v: u32) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

/// Decodes a CoAP uint option of at most `max_len` bytes.
pub fn read_uint(b: &[u8], max_len: usize) -> Option<u32> {
    if b.len() > max_len.min(4) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x)))
}

fn first_option(p: &Packet, number: u16) -> Option<&Vec<u8>> {
    p.get_first_option(CoapOption::from(number))
}

/// A Block1/Block2 option value (RFC 7959 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub num: u32,
    pub more: bool,
    /// Size exponent: the block is `16 << szx` bytes.
    pub szx: u8,
}

impl Block {
    pub fn size(self) -> usize {
        16usize << self.szx
    }

    pub fn decode(v: &[u8]) -> Result<Block, String> {
        let x = read_uint(v, 3).ok_or("Block1 option is longer than 3 bytes")?;
        let szx = (x & 0x7) as u8;
        if szx == 7 {
            return Err("Block1 SZX 7 is reserved".into());
        }
        Ok(Block {
            num: x >> 4,
            more: x & 0x8 != 0,
            szx,
        })
    }

    pub fn encode(self) -> Vec<u8> {
        uint_option((self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx))
    }
}

/// The largest block size exponent whose blocks fit a datagram of
/// `max_datagram` bytes with room for the header.
pub fn preferred_szx(max_datagram: usize) -> u8 {
    (0..=6u8)
        .rev()
        .find(|szx| (16usize << szx) + BLOCK_OVERHEAD <= max_datagram)
        .unwrap_or(0)
}

fn header_bytes(ty: u8, tkl: u8, code: u8, mid: u16) -> [u8; 4] {
    let m = mid.to_be_bytes();
    [0x40 | (ty << 4) | tkl, code, m[0], m[1]]
}

/// A Reset message for `mid` (RFC 7252 §4.2).
pub fn reset(mid: u16) -> Vec<u8> {
    header_bytes(3, 0, 0, mid).to_vec()
}

/// An empty Acknowledgement for `mid`.
pub fn empty_ack(mid: u16) -> Vec<u8> {
    header_bytes(2, 0, 0, mid).to_vec()
}

fn truncate_diagnostic(mut s: String) -> Vec<u8> {
    if s.len() > MAX_DIAGNOSTIC_BYTES {
        let mut cut = MAX_DIAGNOSTIC_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s.into_bytes()
}

// ------------------------------------------------------------- types ---

/// Identifies an exchange for duplicate detection: peer + message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExchangeKey {
    pub peer: SocketAddr,
    pub mid: u16,
}

/// Where and how to answer a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub peer: SocketAddr,
    pub confirmable: bool,
    pub mid: u16,
    pub token: Vec<u8>,
    /// RFC 7967 No-Response bits (2: suppress 2.xx, 8: 4.xx, 16: 5.xx).
    pub no_response: u8,
}

/// A response about to be encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub code: ResponseType,
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl Response {
    fn new(code: ResponseType) -> Self {
        Response {
            code,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }
}

/// Why a request is refused, with its diagnostic.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: ResponseType,
    pub reason: RejectReason,
    pub message: String,
    pub size1: Option<u32>,
    pub max_age: Option<u32>,
    pub block1: Option<Block>,
}

impl Rejection {
    fn new(code: ResponseType, reason: RejectReason, message: impl Into<String>) -> Self {
        Rejection {
            code,
            reason,
            message: message.into(),
            size1: None,
            max_age: None,
            block1: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ResponseType::BadRequest, RejectReason::BadRequest, message)
    }

    fn too_large(max: usize, block1: Option<Block>) -> Self {
        let mut r = Self::new(
            ResponseType::RequestEntityTooLarge,
            RejectReason::TooLarge,
            format!("request body exceeds the limit of {max} bytes"),
        );
        r.size1 = Some(u32::try_from(max).unwrap_or(u32::MAX));
        r.block1 = block1;
        r
    }

    fn unavailable(message: impl Into<String>) -> Self {
        let mut r = Self::new(
            ResponseType::ServiceUnavailable,
            RejectReason::Unavailable,
            message,
        );
        r.max_age = Some(RETRY_AFTER_SECS);
        r
    }

    fn into_response(self) -> Response {
        let mut resp = Response::new(self.code);
        if let Some(a) = self.max_age {
            resp.options.push((opt::MAX_AGE, uint_option(a)));
        }
        if let Some(b) = self.block1 {
            resp.options.push((opt::BLOCK1, b.encode()));
        }
        if let Some(s) = self.size1 {
            resp.options.push((opt::SIZE1, uint_option(s)));
        }
        resp.payload = truncate_diagnostic(self.message);
        resp
    }
}

/// The SenML flavour of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenmlFormat {
    Json,
    Cbor,
}

/// A request that decoded to readings and now waits for its commit.
#[derive(Debug)]
pub struct Pending {
    key: ExchangeKey,
    to: ReplyTo,
    block1: Option<Block>,
    readings: usize,
}

impl Pending {
    pub fn peer(&self) -> SocketAddr {
        self.to.peer
    }

    pub fn message_id(&self) -> u16 {
        self.to.mid
    }
}

/// Why readings were not committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Too many requests already waiting for their commit.
    Busy,
    /// The pipeline queue refused the submission.
    Sink(SinkError),
    /// The buffer refused or failed to store the readings.
    Commit(CommitError),
}

/// What the I/O shell must do with a datagram.
#[derive(Debug)]
pub enum Action {
    /// Nothing to send.
    Ignore,
    /// Send `bytes` to `to`.
    Reply { to: SocketAddr, bytes: Vec<u8> },
    /// Submit `readings`; once the commit resolves, pass the result to
    /// [`ServerCore::finish`] and send what it returns.
    Submit {
        readings: Vec<Reading>,
        pending: Pending,
    },
}

enum Processed {
    Respond(Response),
    Continue(Block),
    Submit {
        readings: Vec<Reading>,
        block1: Option<Block>,
    },
}

// ---------------------------------------------------- duplicate cache ---

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// Readings submitted, commit outstanding.
    InProgress,
    /// Answered: the bytes sent (None: deliberately no response).
    Done(Option<Vec<u8>>),
}

#[derive(Debug)]
struct DedupEntry {
    slot: Slot,
    generation: u64,
}

/// Bounded memory of recent exchanges (RFC 7252 §4.5). All entries live
/// for [`EXCHANGE_LIFETIME`], so insertion order is expiry order and one
/// FIFO serves both expiry and capacity eviction.
#[derive(Debug)]
struct DedupCache {
    capacity: usize,
    map: HashMap<ExchangeKey, DedupEntry>,
    order: VecDeque<(ExchangeKey, Instant, u64)>,
    next_generation: u64,
}

impl DedupCache {
    fn new(capacity: usize) -> Self {
        DedupCache {
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
        }
    }

    fn pop_front(&mut self) {
        if let Some((key, _, generation)) = self.order.pop_front() {
            if self
                .map
                .get(&key)
                .is_some_and(|e| e.generation == generation)
            {
                self.map.remove(&key);
            }
        }
    }

    fn purge(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, expires, _)| *expires <= now)
        {
            self.pop_front();
        }
    }

    fn get(&mut self, key: &ExchangeKey, now: Instant) -> Option<&Slot> {
        self.purge(now);
        self.map.get(key).map(|e| &e.slot)
    }

    /// Remembers an exchange; returns how many live (unexpired) exchanges
    /// had to be forgotten early to stay within capacity.
    fn insert(&mut self, key: ExchangeKey, slot: Slot, now: Instant) -> u64 {
        self.purge(now);
        let mut evicted = 0;
        while self.map.len() >= self.capacity || self.order.len() >= self.capacity * 2 {
            let live = self
                .order
                .front()
                .is_some_and(|(k, _, g)| self.map.get(k).is_some_and(|e| e.generation == *g));
            if live {
                evicted += 1;
            }
            self.pop_front();
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.map.insert(key, DedupEntry { slot, generation });
        self.order
            .push_back((key, now + EXCHANGE_LIFETIME, generation));
        evicted
    }

    fn complete(&mut self, key: &ExchangeKey, bytes: Option<Vec<u8>>) {
        if let Some(e) = self.map.get_mut(key) {
            e.slot = Slot::Done(bytes);
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

// ---------------------------------------------------- block-wise (1) ---

#[derive(Debug)]
struct Transfer {
    body: Vec<u8>,
    format: SenmlFormat,
    expires: Instant,
}

enum Assembled<'a> {
    More(Block),
    Complete(Cow<'a, [u8]>, Option<Block>),
}

/// Reassembles Block1 uploads (RFC 7959 §2.5), one per peer, in order.
#[derive(Debug)]
struct BlockAssembler {
    max_transfers: usize,
    max_payload: usize,
    transfers: HashMap<SocketAddr, Transfer>,
}

impl BlockAssembler {
    fn push<'a>(
        &mut self,
        peer: SocketAddr,
        block: Option<Block>,
        payload: &'a [u8],
        format: SenmlFormat,
        now: Instant,
    ) -> Result<Assembled<'a>, Rejection> {
        self.transfers.retain(|_, t| t.expires > now);
        let Some(block) = block else {
            return Ok(Assembled::Complete(Cow::Borrowed(payload), None));
        };
        if block.more && payload.len() != block.size() {
            self.transfers.remove(&peer);
            return Err(Rejection::bad_request(format!(
                "Block1 block {} has {} bytes but its size is {} (only the last block may be shorter)",
                block.num,
                payload.len(),
                block.size()
            )));
        }
        if payload.len() > block.size() {
            self.transfers.remove(&peer);
            return Err(Rejection::bad_request(format!(
                "Block1 block {} has {} bytes, more than its size {}",
                block.num,
                payload.len(),
                block.size()
            )));
        }
        let offset = (block.num as usize).saturating_mul(block.size());
        if offset.saturating_add(payload.len()) > self.max_payload {
            self.transfers.remove(&peer);
            return Err(Rejection::too_large(self.max_payload, None));
        }
        if block.num == 0 {
            self.transfers.remove(&peer);
            if !block.more {
                return Ok(Assembled::Complete(Cow::Borrowed(payload), Some(block)));
            }
            if self.transfers.len() >= self.max_transfers {
                return Err(Rejection::unavailable(
                    "too many block-wise uploads in progress; retry later",
                ));
            }
            self.transfers.insert(
                peer,
                Transfer {
                    body: payload.to_vec(),
                    format,
                    expires: now + EXCHANGE_LIFETIME,
                },
            );
            return Ok(Assembled::More(block));
        }
        let in_order = self
            .transfers
            .get(&peer)
            .is_some_and(|t| t.body.len() == offset && t.format == format);
        if !in_order {
            self.transfers.remove(&peer);
            return Err(Rejection::new(
                ResponseType::RequestEntityIncomplete,
                RejectReason::Incomplete,
                format!(
                    "Block1 block {} does not continue an upload in progress; start again at block 0",
                    block.num
                ),
            ));
        }
        if block.more {
            if let Some(t) = self.transfers.get_mut(&peer) {
                t.body.extend_from_slice(payload);
                t.expires = now + EXCHANGE_LIFETIME;
            }
            Ok(Assembled::More(block))
        } else {
            let mut body = self
                .transfers
                .remove(&peer)
                .map(|t| t.body)
                .unwrap_or_default();
            body.extend_from_slice(payload);
            Ok(Assembled::Complete(Cow::Owned(body), Some(block)))
        }
    }
}

// --------------------------------------------------------- the steps ---

/// What a parsed message is, for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A request (CON or NON with a 0.xx code).
    Request,
    /// An empty CON ("CoAP ping"): answered with RST.
    Ping,
    /// A CON we cannot process (a response, reserved class): RST.
    RejectCon,
    /// ACK, RST, empty NON, NON responses: silently ignored.
    Ignore,
}

/// Step `parse_header`: the fixed header and token, enough to answer even a
/// datagram whose rest is unusable. `None` if this is not CoAP version 1.
pub fn parse_header(bytes: &[u8]) -> Option<(MessageType, u8, u16, &[u8])> {
    if bytes.len() < 4 || bytes[0] >> 6 != 1 {
        return None;
    }
    let tkl = usize::from(bytes[0] & 0x0F);
    if tkl > 8 || bytes.len() < 4 + tkl {
        return None;
    }
    let ty = match (bytes[0] >> 4) & 0x3 {
        0 => MessageType::Confirmable,
        1 => MessageType::NonConfirmable,
        2 => MessageType::Acknowledgement,
        _ => MessageType::Reset,
    };
    Some((
        ty,
        bytes[1],
        u16::from_be_bytes([bytes[2], bytes[3]]),
        &bytes[4..4 + tkl],
    ))
}

/// Step `parse_packet`: the full message. A message format error gets an
/// RST if it is a CON whose header could be read (RFC 7252 §4.2).
pub fn parse_packet(bytes: &[u8]) -> Result<Packet, Option<u16>> {
    let Some((ty, code, mid, _)) = parse_header(bytes) else {
        return Err(None);
    };
    let con_mid = (ty == MessageType::Confirmable).then_some(mid);
    // An empty message (0.00) must be exactly 4 bytes (RFC 7252 §4.1).
    if code == 0 && bytes.len() != 4 {
        return Err(con_mid);
    }
    let packet = Packet::from_bytes(bytes).map_err(|_| con_mid)?;
    // A payload marker followed by nothing is a format error (§3).
    if packet.payload.is_empty() && bytes.len() > 4 && ends_with_marker(bytes) {
        return Err(con_mid);
    }
    Ok(packet)
}

fn ends_with_marker(bytes: &[u8]) -> bool {
    // Re-encode and compare lengths: coap-lite drops a lone trailing marker.
    bytes.last() == Some(&0xFF)
        && Packet::from_bytes(bytes)
            .ok()
            .and_then(|p| p.to_bytes_unlimited().ok())
            .is_some_and(|re| re.len() + 1 == bytes.len())
}

/// Step `classify`.
pub fn classify(p: &Packet) -> MessageKind {
    let ty = p.header.get_type();
    let code = u8::from(p.header.code);
    match (ty, code) {
        (MessageType::Confirmable, 0) => MessageKind::Ping,
        (MessageType::Confirmable | MessageType::NonConfirmable, c) if c >> 5 == 0 && c != 0 => {
            MessageKind::Request
        }
        (MessageType::Confirmable, _) => MessageKind::RejectCon,
        _ => MessageKind::Ignore,
    }
}

fn reply_to(peer: SocketAddr, p: &Packet) -> ReplyTo {
    let no_response = first_option(p, opt::NO_RESPONSE)
        .and_then(|v| read_uint(v, 1))
        .unwrap_or(0) as u8;
    ReplyTo {
        peer,
        confirmable: p.header.get_type() == MessageType::Confirmable,
        mid: p.header.message_id,
        token: p.get_token().to_vec(),
        no_response,
    }
}

/// Step `check_options`: unrecognised critical (odd-numbered) options get
/// 4.02 (RFC 7252 §5.4.1); proxy requests 5.05 (§5.7.2).
pub fn check_options(p: &Packet) -> Result<(), Rejection> {
    for (&number, _) in p.options() {
        match number {
            opt::PROXY_URI | opt::PROXY_SCHEME => {
                return Err(Rejection::new(
                    ResponseType::ProxyingNotSupported,
                    RejectReason::ProxyingNotSupported,
                    "this server is not a proxy",
                ))
            }
            opt::URI_HOST
            | opt::URI_PORT
            | opt::URI_PATH
            | opt::URI_QUERY
            | opt::BLOCK1
            | opt::BLOCK2 => {}
            n if n % 2 == 1 => {
                return Err(Rejection::new(
                    ResponseType::BadOption,
                    RejectReason::BadOption,
                    format!("unrecognised critical option {n}"),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Which resource a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Telemetry,
    WellKnownCore,
}

/// Step `route`: Uri-Path → resource, else 4.04.
pub fn route(p: &Packet, path: &[String]) -> Result<Route, Rejection> {
    let segments: Vec<&[u8]> = p
        .get_option(CoapOption::UriPath)
        .map(|l| l.iter().map(Vec::as_slice).collect())
        .unwrap_or_default();
    if segments.len() == path.len() && segments.iter().zip(path).all(|(a, b)| *a == b.as_bytes()) {
        return Ok(Route::Telemetry);
    }
    if segments == [b".well-known".as_slice(), b"core".as_slice()] {
        return Ok(Route::WellKnownCore);
    }
    let shown: Vec<String> = segments
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    Err(Rejection::new(
        ResponseType::NotFound,
        RejectReason::NotFound,
        format!(
            "no resource at /{}; POST SenML to /{}",
            shown.join("/"),
            path.join("/")
        ),
    ))
}

/// Step `check_method`: POST for telemetry, GET for discovery, else 4.05.
pub fn check_method(p: &Packet, route: Route) -> Result<(), Rejection> {
    let method = match p.header.code {
        MessageClass::Request(m) => Some(m),
        _ => None,
    };
    let allowed = match route {
        Route::Telemetry => RequestType::Post,
        Route::WellKnownCore => RequestType::Get,
    };
    if method == Some(allowed) {
        Ok(())
    } else {
        Err(Rejection::new(
            ResponseType::MethodNotAllowed,
            RejectReason::MethodNotAllowed,
            format!(
                "method {} not allowed here; use {}",
                p.header.code,
                match allowed {
                    RequestType::Post => "POST",
                    _ => "GET",
                }
            ),
        ))
    }
}

/// Step `check_content_format`: 110 or 112, anything else (or none) 4.15.
pub fn check_content_format(p: &Packet) -> Result<SenmlFormat, Rejection> {
    let unsupported = |m: String| {
        Rejection::new(
            ResponseType::UnsupportedContentFormat,
            RejectReason::UnsupportedContentFormat,
            m,
        )
    };
    let Some(raw) = first_option(p, opt::CONTENT_FORMAT) else {
        return Err(unsupported(format!(
            "missing Content-Format option: set {CONTENT_FORMAT_JSON} (application/senml+json) or {CONTENT_FORMAT_CBOR} (application/senml+cbor)"
        )));
    };
    match read_uint(raw, 2).map(|v| v as u16) {
        Some(CONTENT_FORMAT_JSON) => Ok(SenmlFormat::Json),
        Some(CONTENT_FORMAT_CBOR) => Ok(SenmlFormat::Cbor),
        Some(other) => Err(unsupported(format!(
            "unsupported Content-Format {other}: use {CONTENT_FORMAT_JSON} (application/senml+json) or {CONTENT_FORMAT_CBOR} (application/senml+cbor)"
        ))),
        None => Err(Rejection::bad_request(
            "Content-Format option is longer than 2 bytes",
        )),
    }
}

/// Step `check_size1`: a client announcing a body above the limit (Size1,
/// RFC 7959 §4) is refused before it sends the blocks.
pub fn check_size1(p: &Packet, max_payload: usize) -> Result<(), Rejection> {
    match first_option(p, opt::SIZE1).map(|v| read_uint(v, 4)) {
        None => Ok(()),
        Some(None) => Err(Rejection::bad_request(
            "Size1 option is longer than 4 bytes",
        )),
        Some(Some(size)) if size as usize > max_payload => {
            Err(Rejection::too_large(max_payload, None))
        }
        Some(Some(_)) => Ok(()),
    }
}

/// Step `check_size`: the (reassembled) body against the limit.
pub fn check_size(len: usize, max_payload: usize) -> Result<(), Rejection> {
    if len > max_payload {
        Err(Rejection::too_large(max_payload, None))
    } else {
        Ok(())
    }
}

/// Step `decode_senml`: the pack → readings. Records without a base name
/// belong to `coap:<peer ip>`.
pub fn decode_senml(
    body: &[u8],
    format: SenmlFormat,
    limits: &Limits,
    now: Timestamp,
    peer: SocketAddr,
) -> Result<Vec<Reading>, Rejection> {
    if body.is_empty() {
        return Err(Rejection::bad_request("empty payload: POST a SenML pack"));
    }
    let default = DeviceId::sanitized(Transport::Coap, &peer.ip().to_canonical().to_string());
    let naming = DeviceNaming::Namespaced {
        transport: Transport::Coap,
        default: &default,
    };
    let decoded = match format {
        SenmlFormat::Json => senml::readings_from_json(body, limits, now, &naming),
        SenmlFormat::Cbor => senml::readings_from_cbor(body, limits, now, &naming),
    };
    decoded.map_err(|e| Rejection::bad_request(e.to_string()))
}

/// Step `validate_readings`: what the wire format cannot carry is refused
/// here rather than by the buffer.
pub fn validate_readings(readings: &[Reading]) -> Result<(), Rejection> {
    for r in readings {
        wire::validate(r).map_err(|e| Rejection::bad_request(e.to_string()))?;
    }
    Ok(())
}

// ----------------------------------------------------------- the core ---

/// The server's state machine: duplicate cache and Block1 reassembly.
#[derive(Debug)]
pub struct ServerCore {
    settings: ServerSettings,
    dedup: DedupCache,
    blocks: BlockAssembler,
    next_mid: u16,
    stats: Arc<CoapStats>,
}

impl ServerCore {
    /// `first_mid` seeds the message ids of NON responses (use a random
    /// value, RFC 7252 §4.4).
    pub fn new(settings: ServerSettings, stats: Arc<CoapStats>, first_mid: u16) -> Self {
        ServerCore {
            dedup: DedupCache::new(settings.dedup_capacity),
            blocks: BlockAssembler {
                max_transfers: settings.max_block_transfers,
                max_payload: settings.max_payload_bytes,
                transfers: HashMap::new(),
            },
            settings,
            next_mid: first_mid,
            stats,
        }
    }

    pub fn stats(&self) -> &Arc<CoapStats> {
        &self.stats
    }

    /// Exchanges currently remembered for duplicate detection.
    pub fn remembered_exchanges(&self) -> usize {
        self.dedup.len()
    }

    /// Handles one datagram from `peer`. `truncated` is set when the
    /// datagram was larger than `max_datagram_bytes` (only its head is in
    /// `bytes`). `now` drives expiry, `wall` resolves SenML relative times.
    pub fn handle_datagram(
        &mut self,
        peer: SocketAddr,
        bytes: &[u8],
        truncated: bool,
        now: Instant,
        wall: Timestamp,
    ) -> Action {
        bump(&self.stats.datagrams, 1);
        if truncated {
            return self.oversized(peer, bytes, now);
        }
        let packet = match parse_packet(bytes) {
            Ok(p) => p,
            Err(con_mid) => {
                bump(&self.stats.malformed_datagrams, 1);
                return match con_mid {
                    Some(mid) => Action::Reply {
                        to: peer,
                        bytes: reset(mid),
                    },
                    None => Action::Ignore,
                };
            }
        };
        match classify(&packet) {
            MessageKind::Request => {}
            MessageKind::Ping | MessageKind::RejectCon => {
                return Action::Reply {
                    to: peer,
                    bytes: reset(packet.header.message_id),
                }
            }
            MessageKind::Ignore => return Action::Ignore,
        }
        let to = reply_to(peer, &packet);
        let key = ExchangeKey {
            peer,
            mid: packet.header.message_id,
        };
        if let Some(action) = self.dedup_step(key, now) {
            return action;
        }
        bump(&self.stats.requests, 1);
        match self.process(&packet, peer, now, wall) {
            Ok(Processed::Respond(resp)) => self.respond_now(key, &to, resp, now),
            Ok(Processed::Continue(block)) => {
                bump(&self.stats.blocks_continued, 1);
                let mut resp = Response::new(ResponseType::Continue);
                resp.options.push((opt::BLOCK1, block.encode()));
                self.respond_now(key, &to, resp, now)
            }
            Ok(Processed::Submit { readings, block1 }) => {
                let evicted = self.dedup.insert(key, Slot::InProgress, now);
                bump(&self.stats.dedup_evicted_early, evicted);
                let count = readings.len();
                Action::Submit {
                    readings,
                    pending: Pending {
                        key,
                        to,
                        block1,
                        readings: count,
                    },
                }
            }
            Err(rejection) => {
                self.stats.reject(rejection.reason);
                self.respond_now(key, &to, rejection.into_response(), now)
            }
        }
    }

    /// Builds the response once the commit resolved, and remembers it for
    /// retransmissions. `None`: nothing to send (No-Response).
    pub fn finish(
        &mut self,
        pending: Pending,
        outcome: Result<Committed, Refusal>,
        _now: Instant,
    ) -> Option<Vec<u8>> {
        let resp = match outcome {
            Ok(_) => {
                bump(&self.stats.accepted_requests, 1);
                bump(&self.stats.accepted_readings, pending.readings as u64);
                let mut resp = Response::new(ResponseType::Changed);
                if let Some(b) = pending.block1 {
                    resp.options.push((opt::BLOCK1, b.encode()));
                }
                resp
            }
            Err(refusal) => {
                let rejection = match refusal {
                    Refusal::Busy => Rejection::unavailable(
                        "too many requests in flight; retry after Max-Age seconds",
                    ),
                    Refusal::Sink(e) => Rejection::unavailable(e.to_string()),
                    Refusal::Commit(e @ (CommitError::BufferFull | CommitError::Closed)) => {
                        Rejection::unavailable(e.to_string())
                    }
                    Refusal::Commit(e @ CommitError::Storage(_)) => Rejection::new(
                        ResponseType::InternalServerError,
                        RejectReason::Storage,
                        e.to_string(),
                    ),
                    Refusal::Commit(e @ CommitError::Invalid(_)) => {
                        Rejection::bad_request(e.to_string())
                    }
                };
                self.stats.reject(rejection.reason);
                rejection.into_response()
            }
        };
        let bytes = self.encode(&pending.to, resp);
        self.dedup.complete(&pending.key, bytes.clone());
        bytes
    }

    fn dedup_step(&mut self, key: ExchangeKey, now: Instant) -> Option<Action> {
        let slot = self.dedup.get(&key, now)?.clone();
        bump(&self.stats.duplicates, 1);
        Some(match slot {
            // Still committing: the piggybacked response follows; answering
            // now with an empty ACK would turn it into a separate response.
            Slot::InProgress | Slot::Done(None) => Action::Ignore,
            Slot::Done(Some(bytes)) => Action::Reply {
                to: key.peer,
                bytes,
            },
        })
    }

    fn respond_now(
        &mut self,
        key: ExchangeKey,
        to: &ReplyTo,
        resp: Response,
        now: Instant,
    ) -> Action {
        let bytes = self.encode(to, resp);
        let evicted = self.dedup.insert(key, Slot::Done(bytes.clone()), now);
        bump(&self.stats.dedup_evicted_early, evicted);
        match bytes {
            Some(bytes) => Action::Reply { to: to.peer, bytes },
            None => Action::Ignore,
        }
    }

    fn process(
        &mut self,
        p: &Packet,
        peer: SocketAddr,
        now: Instant,
        wall: Timestamp,
    ) -> Result<Processed, Rejection> {
        check_options(p)?;
        let route = route(p, &self.settings.path)?;
        check_method(p, route)?;
        if route == Route::WellKnownCore {
            let mut resp = Response::new(ResponseType::Content);
            resp.options
                .push((opt::CONTENT_FORMAT, uint_option(CONTENT_FORMAT_LINK.into())));
            resp.payload = format!(
                "</{}>;ct=\"{CONTENT_FORMAT_JSON} {CONTENT_FORMAT_CBOR}\";rt=\"senml\"",
                self.settings.path.join("/")
            )
            .into_bytes();
            return Ok(Processed::Respond(resp));
        }
        let format = check_content_format(p)?;
        check_size1(p, self.settings.max_payload_bytes)?;
        let block = match first_option(p, opt::BLOCK1) {
            Some(v) => Some(Block::decode(v).map_err(Rejection::bad_request)?),
            None => None,
        };
        let (body, block1) = match self.blocks.push(peer, block, &p.payload, format, now)? {
            Assembled::More(b) => return Ok(Processed::Continue(b)),
            Assembled::Complete(body, b) => (body, b),
        };
        check_size(body.len(), self.settings.max_payload_bytes)?;
        let readings = decode_senml(&body, format, &self.settings.limits, wall, peer)?;
        validate_readings(&readings)?;
        Ok(Processed::Submit { readings, block1 })
    }

    /// A datagram larger than `max_datagram_bytes`: 4.13 with Size1 (the
    /// body limit) and a Block1 hint so the client retries block-wise.
    fn oversized(&mut self, peer: SocketAddr, bytes: &[u8], now: Instant) -> Action {
        let Some((ty, code, mid, token)) = parse_header(bytes) else {
            bump(&self.stats.malformed_datagrams, 1);
            return Action::Ignore;
        };
        let request = matches!(ty, MessageType::Confirmable | MessageType::NonConfirmable)
            && code >> 5 == 0
            && code != 0;
        if !request {
            bump(&self.stats.malformed_datagrams, 1);
            return Action::Ignore;
        }
        let key = ExchangeKey { peer, mid };
        if let Some(action) = self.dedup_step(key, now) {
            return action;
        }
        bump(&self.stats.requests, 1);
        let to = ReplyTo {
            peer,
            confirmable: ty == MessageType::Confirmable,
            mid,
            token: token.to_vec(),
            no_response: 0,
        };
        let hint = Block {
            num: 0,
            more: false,
            szx: preferred_szx(self.settings.max_datagram_bytes),
        };
        let mut rejection = Rejection::too_large(self.settings.max_payload_bytes, Some(hint));
        rejection.message = format!(
            "datagram exceeds {} bytes; send the body block-wise (Block1, at most {} bytes per block, {} bytes in total)",
            self.settings.max_datagram_bytes,
            hint.size(),
            self.settings.max_payload_bytes
        );
        self.stats.reject(rejection.reason);
        self.respond_now(key, &to, rejection.into_response(), now)
    }

    fn encode(&mut self, to: &ReplyTo, resp: Response) -> Option<Vec<u8>> {
        let class = u8::from(MessageClass::Response(resp.code)) >> 5;
        let suppressed = match class {
            2 => to.no_response & 0x02 != 0,
            4 => to.no_response & 0x08 != 0,
            5 => to.no_response & 0x10 != 0,
            _ => false,
        };
        if suppressed {
            // The exchange still needs its ACK; a NON gets nothing.
            return to.confirmable.then(|| empty_ack(to.mid));
        }
        let mut p = Packet::new();
        p.header.set_version(1);
        if to.confirmable {
            p.header.set_type(MessageType::Acknowledgement);
            p.header.message_id = to.mid;
        } else {
            p.header.set_type(MessageType::NonConfirmable);
            p.header.message_id = self.next_mid;
            self.next_mid = self.next_mid.wrapping_add(1);
        }
        p.header.code = MessageClass::Response(resp.code);
        p.set_token(to.token.clone());
        for (number, value) in resp.options {
            p.add_option(CoapOption::from(number), value);
        }
        p.payload = resp.payload;
        p.to_bytes_unlimited().ok()
    }
}

// ---------------------------------------------------------------- fuzz ---

/// Feeds arbitrary bytes through the pure path: as a datagram (parse →
/// classify → … → decode → finish), as a truncated datagram, and as the body
/// of a well-formed POST in both SenML formats. Must never panic. Used by
/// the `coap_datagram` fuzz target and the seed-corpus test.
pub fn fuzz_datagram(data: &[u8]) {
    let now = Instant::now();
    let wall = Timestamp(1_700_000_000_000_000);
    let peer: SocketAddr = SocketAddr::from(([192, 0, 2, 1], 5683));
    let settings = ServerSettings {
        max_datagram_bytes: 1280,
        max_payload_bytes: 4096,
        ..ServerSettings::default()
    };
    let mut core = ServerCore::new(settings, Arc::new(CoapStats::default()), 1);
    let run = |core: &mut ServerCore, bytes: &[u8], truncated: bool| match core
        .handle_datagram(peer, bytes, truncated, now, wall)
    {
        Action::Submit { readings, pending } => {
            assert!(!readings.is_empty());
            let out = core.finish(
                pending,
                Ok(Committed {
                    first_seq: 0,
                    count: readings.len(),
                }),
                now,
            );
            if let Some(b) = out {
                assert!(Packet::from_bytes(&b).is_ok());
            }
        }
        Action::Reply { bytes, .. } => assert!(Packet::from_bytes(&bytes).is_ok()),
        Action::Ignore => {}
    };
    run(&mut core, data, false);
    // The same datagram again is a duplicate and must not be re-processed.
    let before = core
        .stats()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    run(&mut core, data, false);
    assert_eq!(
        core.stats()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        before
    );
    run(&mut core, &data[..data.len().min(64)], true);
    for (i, cf) in [CONTENT_FORMAT_JSON, CONTENT_FORMAT_CBOR]
        .into_iter()
        .enumerate()
    {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Post);
        p.header.message_id = 0x4000 + i as u16;
        p.add_option(CoapOption::UriPath, b"telemetry".to_vec());
        p.add_option(CoapOption::ContentFormat, uint_option(cf.into()));
        p.payload = data.to_vec();
        if let Ok(bytes) = p.to_bytes_unlimited() {
            run(&mut core, &bytes, false);
        }
    }
    crate::observe::fuzz_notification(data, wall);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn peer() -> SocketAddr {
        "10.0.0.7:40000".parse().unwrap()
    }

    fn core() -> ServerCore {
        ServerCore::new(
            ServerSettings {
                max_payload_bytes: 256,
                max_datagram_bytes: 300,
                dedup_capacity: 8,
                max_block_transfers: 2,
                ..ServerSettings::default()
            },
            Arc::new(CoapStats::default()),
            100,
        )
    }

    fn post(mid: u16, cf: Option<u16>, payload: &[u8]) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Post);
        p.header.message_id = mid;
        p.set_token(vec![0xAA, mid as u8]);
        p.add_option(CoapOption::UriPath, b"telemetry".to_vec());
        if let Some(cf) = cf {
            p.add_option(CoapOption::ContentFormat, uint_option(cf.into()));
        }
        p.payload = payload.to_vec();
        p
    }

    fn send(c: &mut ServerCore, p: &Packet) -> Action {
        c.handle_datagram(
            peer(),
            &p.to_bytes_unlimited().unwrap(),
            false,
            Instant::now(),
            Timestamp(1_700_000_000_000_000),
        )
    }

    fn reply(a: Action) -> Packet {
        match a {
            Action::Reply { bytes, .. } => Packet::from_bytes(&bytes).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn code(p: &Packet) -> ResponseType {
        match p.header.code {
            MessageClass::Response(r) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    fn diag(p: &Packet) -> String {
        String::from_utf8(p.payload.clone()).unwrap()
    }

    #[test]
    fn valid_json_pack_becomes_a_submission_for_the_base_name_device() {
        let mut c = core();
        let a = send(
            &mut c,
            &post(1, Some(110), br#"[{"bn":"sensor-7/","n":"t","v":1}]"#),
        );
        let Action::Submit { readings, pending } = a else {
            panic!("expected submit, got {a:?}")
        };
        assert_eq!(readings[0].device.as_str(), "coap:sensor-7");
        let out = c
            .finish(
                pending,
                Ok(Committed {
                    first_seq: 1,
                    count: 1,
                }),
                Instant::now(),
            )
            .unwrap();
        let p = Packet::from_bytes(&out).unwrap();
        assert_eq!(code(&p), ResponseType::Changed);
        assert_eq!(p.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(p.header.message_id, 1);
        assert_eq!(p.get_token(), &[0xAA, 1]);
    }

    #[test]
    fn records_without_base_name_belong_to_the_peer_ip() {
        let mut c = core();
        let Action::Submit { readings, .. } =
            send(&mut c, &post(1, Some(110), br#"[{"n":"t","v":1}]"#))
        else {
            panic!()
        };
        assert_eq!(readings[0].device.as_str(), "coap:10.0.0.7");
    }

    #[test]
    fn malformed_senml_gets_bad_request_with_the_decode_error() {
        let mut c = core();
        let p = reply(send(
            &mut c,
            &post(
                1,
                Some(110),
                br#"[{"n":"a","v":1},{"n":"b","v":2},{"n":"c","v":"x"}]"#,
            ),
        ));
        assert_eq!(code(&p), ResponseType::BadRequest);
        assert_eq!(diag(&p), r#"record 2: field "v" must be a number"#);
        assert_eq!(c.stats().rejected_bad_request.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn malformed_cbor_and_empty_payloads_get_bad_request() {
        let mut c = core();
        let p = reply(send(&mut c, &post(1, Some(112), &[0xFF, 0x00])));
        assert_eq!(code(&p), ResponseType::BadRequest);
        let p = reply(send(&mut c, &post(2, Some(110), b"")));
        assert_eq!(code(&p), ResponseType::BadRequest);
        assert!(diag(&p).contains("empty payload"));
    }

    #[test]
    fn missing_content_format_gets_unsupported_content_format_naming_110_and_112() {
        let mut c = core();
        let p = reply(send(&mut c, &post(1, None, br#"[{"n":"t","v":1}]"#)));
        assert_eq!(code(&p), ResponseType::UnsupportedContentFormat);
        assert!(diag(&p).contains("110") && diag(&p).contains("112"));
        let p = reply(send(&mut c, &post(2, Some(50), br#"[{"n":"t","v":1}]"#)));
        assert_eq!(code(&p), ResponseType::UnsupportedContentFormat);
        assert!(diag(&p).contains("unsupported Content-Format 50"));
    }

    #[test]
    fn oversized_body_gets_too_large_with_size1() {
        let mut c = core();
        let body = format!(r#"[{{"n":"t","vs":"{}"}}]"#, "x".repeat(260));
        let p = reply(send(&mut c, &post(1, Some(110), body.as_bytes())));
        assert_eq!(code(&p), ResponseType::RequestEntityTooLarge);
        assert_eq!(
            read_uint(p.get_first_option(CoapOption::Size1).unwrap(), 4),
            Some(256)
        );
    }

    #[test]
    fn truncated_datagram_gets_too_large_with_a_block1_hint() {
        let mut c = core();
        let bytes = post(9, Some(110), &[b'x'; 200])
            .to_bytes_unlimited()
            .unwrap();
        let p = reply(c.handle_datagram(peer(), &bytes[..50], true, Instant::now(), Timestamp(0)));
        assert_eq!(code(&p), ResponseType::RequestEntityTooLarge);
        assert_eq!(p.header.message_id, 9);
        let hint = Block::decode(p.get_first_option(CoapOption::Block1).unwrap()).unwrap();
        assert!(hint.size() + BLOCK_OVERHEAD <= 300);
        assert!(p.get_first_option(CoapOption::Size1).is_some());
    }

    #[test]
    fn unknown_path_gets_not_found_and_wrong_method_gets_method_not_allowed() {
        let mut c = core();
        let mut p = post(1, Some(110), b"[]");
        p.clear_option(CoapOption::UriPath);
        p.add_option(CoapOption::UriPath, b"nope".to_vec());
        assert_eq!(code(&reply(send(&mut c, &p))), ResponseType::NotFound);
        let mut p = post(2, Some(110), b"[]");
        p.header.code = MessageClass::Request(RequestType::Put);
        assert_eq!(
            code(&reply(send(&mut c, &p))),
            ResponseType::MethodNotAllowed
        );
        // An unassigned request code (0.09) is a method, too.
        let mut p = post(3, Some(110), b"[]");
        p.header.code = MessageClass::Reserved(9);
        assert_eq!(
            code(&reply(send(&mut c, &p))),
            ResponseType::MethodNotAllowed
        );
    }

    #[test]
    fn unrecognised_critical_option_gets_bad_option() {
        let mut c = core();
        let mut p = post(1, Some(110), br#"[{"n":"t","v":1}]"#);
        p.add_option(CoapOption::Unknown(2049), vec![1]);
        assert_eq!(code(&reply(send(&mut c, &p))), ResponseType::BadOption);
        // Elective unknown options are ignored.
        let mut p = post(2, Some(110), br#"[{"n":"t","v":1}]"#);
        p.add_option(CoapOption::Unknown(2048), vec![1]);
        assert!(matches!(send(&mut c, &p), Action::Submit { .. }));
    }

    #[test]
    fn retransmission_is_not_processed_twice_and_gets_the_same_response() {
        let mut c = core();
        let p = post(5, Some(110), br#"[{"n":"t","v":1}]"#);
        let Action::Submit { pending, .. } = send(&mut c, &p) else {
            panic!()
        };
        // While the commit is outstanding the duplicate is dropped.
        assert!(matches!(send(&mut c, &p), Action::Ignore));
        let first = c
            .finish(
                pending,
                Ok(Committed {
                    first_seq: 1,
                    count: 1,
                }),
                Instant::now(),
            )
            .unwrap();
        let Action::Reply { bytes, .. } = send(&mut c, &p) else {
            panic!()
        };
        assert_eq!(bytes, first);
        assert_eq!(c.stats().duplicates.load(Ordering::Relaxed), 2);
        assert_eq!(c.stats().requests.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn duplicate_memory_is_bounded_and_expires() {
        let mut c = core();
        let t0 = Instant::now();
        for mid in 0..20u16 {
            let mut p = post(mid, Some(110), b"[]");
            p.clear_option(CoapOption::UriPath);
            let _ = c.handle_datagram(
                peer(),
                &p.to_bytes_unlimited().unwrap(),
                false,
                t0,
                Timestamp(0),
            );
        }
        assert_eq!(c.remembered_exchanges(), 8);
        // 20 live exchanges through 8 slots: 12 forgotten before their
        // lifetime, and counted so operators can size the cache.
        assert_eq!(c.stats().dedup_evicted_early.load(Ordering::Relaxed), 12);
        let mut p = post(100, Some(110), b"[]");
        p.clear_option(CoapOption::UriPath);
        let later = t0 + EXCHANGE_LIFETIME + Duration::from_secs(1);
        let _ = c.handle_datagram(
            peer(),
            &p.to_bytes_unlimited().unwrap(),
            false,
            later,
            Timestamp(0),
        );
        assert_eq!(c.remembered_exchanges(), 1);
        // Expired ones are not "early".
        assert_eq!(c.stats().dedup_evicted_early.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn refusals_map_to_service_unavailable_or_internal_error() {
        let cases = [
            (Refusal::Busy, ResponseType::ServiceUnavailable),
            (
                Refusal::Sink(SinkError::Full),
                ResponseType::ServiceUnavailable,
            ),
            (
                Refusal::Sink(SinkError::Closed),
                ResponseType::ServiceUnavailable,
            ),
            (
                Refusal::Commit(CommitError::BufferFull),
                ResponseType::ServiceUnavailable,
            ),
            (
                Refusal::Commit(CommitError::Closed),
                ResponseType::ServiceUnavailable,
            ),
            (
                Refusal::Commit(CommitError::Storage("disk".into())),
                ResponseType::InternalServerError,
            ),
            (
                Refusal::Commit(CommitError::Invalid("x".into())),
                ResponseType::BadRequest,
            ),
        ];
        for (i, (refusal, expected)) in cases.into_iter().enumerate() {
            let mut c = core();
            let Action::Submit { pending, .. } =
                send(&mut c, &post(i as u16, Some(110), br#"[{"n":"t","v":1}]"#))
            else {
                panic!()
            };
            let p = Packet::from_bytes(&c.finish(pending, Err(refusal), Instant::now()).unwrap())
                .unwrap();
            assert_eq!(code(&p), expected);
            if expected == ResponseType::ServiceUnavailable {
                assert_eq!(
                    read_uint(p.get_first_option(CoapOption::MaxAge).unwrap(), 4),
                    Some(RETRY_AFTER_SECS)
                );
            }
        }
    }

    #[test]
    fn non_request_gets_non_response_with_fresh_message_id_unless_suppressed() {
        let mut c = core();
        let mut p = post(7, Some(110), br#"[{"n":"t","v":1}]"#);
        p.header.set_type(MessageType::NonConfirmable);
        let Action::Submit { pending, .. } = send(&mut c, &p) else {
            panic!()
        };
        let out = Packet::from_bytes(
            &c.finish(
                pending,
                Ok(Committed {
                    first_seq: 0,
                    count: 1,
                }),
                Instant::now(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(out.header.get_type(), MessageType::NonConfirmable);
        assert_eq!(out.header.message_id, 100);
        assert_eq!(out.get_token(), p.get_token());

        let mut p = post(8, Some(110), br#"[{"n":"t","v":1}]"#);
        p.header.set_type(MessageType::NonConfirmable);
        p.add_option(CoapOption::NoResponse, vec![0x02]);
        let Action::Submit { pending, .. } = send(&mut c, &p) else {
            panic!()
        };
        assert!(c
            .finish(
                pending,
                Ok(Committed {
                    first_seq: 0,
                    count: 1
                }),
                Instant::now()
            )
            .is_none());
    }

    #[test]
    fn garbage_is_ignored_and_counted_and_con_format_errors_are_reset() {
        let mut c = core();
        for g in [&b""[..], b"\x00", b"hello world", b"\x80\x01\x00\x01"] {
            let a = c.handle_datagram(peer(), g, false, Instant::now(), Timestamp(0));
            assert!(matches!(a, Action::Ignore), "{g:?}");
        }
        // CON, token length 0, an option with reserved delta 15.
        let a = c.handle_datagram(
            peer(),
            b"\x40\x02\x12\x34\xF1",
            false,
            Instant::now(),
            Timestamp(0),
        );
        let Action::Reply { bytes, .. } = a else {
            panic!()
        };
        assert_eq!(bytes, reset(0x1234));
        // Payload marker with no payload.
        let a = c.handle_datagram(
            peer(),
            b"\x40\x02\x12\x35\xFF",
            false,
            Instant::now(),
            Timestamp(0),
        );
        assert!(matches!(a, Action::Reply { .. }));
        assert_eq!(c.stats().malformed_datagrams.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn ping_gets_reset_and_stray_acks_are_ignored() {
        let mut c = core();
        let a = c.handle_datagram(
            peer(),
            &header_bytes(0, 0, 0, 77),
            false,
            Instant::now(),
            Timestamp(0),
        );
        let Action::Reply { bytes, .. } = a else {
            panic!()
        };
        assert_eq!(bytes, reset(77));
        let a = c.handle_datagram(peer(), &empty_ack(3), false, Instant::now(), Timestamp(0));
        assert!(matches!(a, Action::Ignore));
    }

    fn block_post(mid: u16, num: u32, more: bool, szx: u8, chunk: &[u8]) -> Packet {
        let mut p = post(mid, Some(110), chunk);
        p.add_option(CoapOption::Block1, Block { num, more, szx }.encode());
        p
    }

    #[test]
    fn block1_upload_is_reassembled_then_submitted() {
        let mut c = core();
        let body = br#"[{"bn":"blk/","n":"temperature","u":"Cel","v":21.5}]"#;
        let chunks: Vec<&[u8]> = body.chunks(16).collect();
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.iter().enumerate() {
            let a = send(
                &mut c,
                &block_post(10 + i as u16, i as u32, i < last, 0, chunk),
            );
            if i < last {
                let p = reply(a);
                assert_eq!(code(&p), ResponseType::Continue);
                let b = Block::decode(p.get_first_option(CoapOption::Block1).unwrap()).unwrap();
                assert_eq!((b.num, b.more), (i as u32, true));
            } else {
                let Action::Submit { readings, pending } = a else {
                    panic!("{a:?}")
                };
                assert_eq!(readings[0].device.as_str(), "coap:blk");
                let p = Packet::from_bytes(
                    &c.finish(
                        pending,
                        Ok(Committed {
                            first_seq: 0,
                            count: 1,
                        }),
                        Instant::now(),
                    )
                    .unwrap(),
                )
                .unwrap();
                let b = Block::decode(p.get_first_option(CoapOption::Block1).unwrap()).unwrap();
                assert_eq!((b.num, b.more), (last as u32, false));
            }
        }
    }

    #[test]
    fn block1_out_of_order_gets_incomplete_and_over_limit_gets_too_large() {
        let mut c = core();
        let p = reply(send(&mut c, &block_post(1, 3, true, 0, &[b'x'; 16])));
        assert_eq!(code(&p), ResponseType::RequestEntityIncomplete);
        // 256-byte limit: block 16 of size 16 starts at offset 256.
        reply(send(&mut c, &block_post(2, 0, true, 0, &[b'['; 16])));
        let p = reply(send(&mut c, &block_post(3, 16, true, 0, &[b'x'; 16])));
        assert_eq!(code(&p), ResponseType::RequestEntityTooLarge);
        // Wrong block length with M=1.
        let p = reply(send(&mut c, &block_post(4, 0, true, 1, &[b'x'; 16])));
        assert_eq!(code(&p), ResponseType::BadRequest);
        // Reserved SZX.
        let mut p = post(5, Some(110), b"x");
        p.add_option(CoapOption::Block1, vec![0x0F]);
        assert_eq!(code(&reply(send(&mut c, &p))), ResponseType::BadRequest);
    }

    #[test]
    fn size1_above_limit_is_refused_up_front() {
        let mut c = core();
        let mut p = block_post(1, 0, true, 0, &[b'['; 16]);
        p.add_option(CoapOption::Size1, uint_option(100_000));
        assert_eq!(
            code(&reply(send(&mut c, &p))),
            ResponseType::RequestEntityTooLarge
        );
    }

    #[test]
    fn well_known_core_lists_the_telemetry_resource() {
        let mut c = core();
        let mut p = post(1, None, b"");
        p.header.code = MessageClass::Request(RequestType::Get);
        p.clear_option(CoapOption::UriPath);
        p.add_option(CoapOption::UriPath, b".well-known".to_vec());
        p.add_option(CoapOption::UriPath, b"core".to_vec());
        let r = reply(send(&mut c, &p));
        assert_eq!(code(&r), ResponseType::Content);
        assert!(diag(&r).starts_with("</telemetry>"));
    }

    #[test]
    fn block_values_round_trip() {
        for b in [
            Block {
                num: 0,
                more: false,
                szx: 0,
            },
            Block {
                num: 1,
                more: true,
                szx: 6,
            },
            Block {
                num: 4095,
                more: true,
                szx: 2,
            },
            Block {
                num: (1 << 20) - 1,
                more: false,
                szx: 6,
            },
        ] {
            assert_eq!(Block::decode(&b.encode()).unwrap(), b);
        }
        assert!(Block::decode(&[1, 2, 3, 4]).is_err());
        assert_eq!(preferred_szx(1280), 6);
        assert_eq!(preferred_szx(64), 0);
    }
}
