//! The LoRaWAN device registry: keys (zeroed on drop), validation of
//! `AddDevice` requests, and the SQLite store. The identifiers ([`Eui64`],
//! [`DevAddr`]) are the protocol crate's, re-exported. See the crate documentation for what is
//! stored where and how keys are protected.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use tokio::sync::watch;

// ---------------------------------------------------------------------------
// Hex identifiers and keys
// ---------------------------------------------------------------------------

// DevEUI/JoinEUI and DevAddr are the protocol crate's types (one
// definition, parsed and printed the same everywhere); keys stay here, where
// they are zeroed on drop.
pub use gatewayd_lorawan_proto::{decode_hex_into, DevAddr, Eui64, ParseHexError};

/// A 128-bit AES key (AppKey, NwkSKey, AppSKey).
///
/// Never printed: `Debug` and `Display` both give `AesKey(<redacted>)`. The
/// bytes are overwritten with zeros when the value is dropped (copies made
/// by moves are out of reach, as with any zeroize-on-drop type).
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey(pub [u8; 16]);

impl AesKey {
    /// Parses exactly 32 hex digits (either case, no separators). Decodes
    /// straight into the key, so no unzeroed copy is left behind on error.
    pub fn from_hex(s: &str) -> Result<AesKey, ParseHexError> {
        let mut key = AesKey([0; 16]);
        decode_hex_into(s, &mut key.0)?;
        Ok(key)
    }
}

impl FromStr for AesKey {
    type Err = ParseHexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AesKey::from_hex(s)
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

impl fmt::Display for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

impl Drop for AesKey {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
            // The volatile write keeps the compiler from eliding the store
            // of a value that is never read again.
            unsafe { core::ptr::write_volatile(b, 0) };
        }
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------

/// How a device joins the network, with its root or session keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// Over-the-air activation: the device joins with JoinEUI and AppKey
    /// (LoRaWAN 1.0.x root key).
    Otaa { join_eui: Eui64, app_key: AesKey },
    /// Activation by personalisation: fixed address and session keys.
    Abp {
        dev_addr: DevAddr,
        nwk_s_key: AesKey,
        app_s_key: AesKey,
    },
}

impl Activation {
    /// `"otaa"` or `"abp"`, as in `ListDevices` and the database.
    pub fn kind(&self) -> &'static str {
        match self {
            Activation::Otaa { .. } => "otaa",
            Activation::Abp { .. } => "abp",
        }
    }
}

impl fmt::Display for Activation {
    /// Identifiers only, never keys: `OTAA (join_eui …)`, `ABP (dev_addr …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::Otaa { join_eui, .. } => write!(f, "OTAA (join_eui {join_eui})"),
            Activation::Abp { dev_addr, .. } => write!(f, "ABP (dev_addr {dev_addr})"),
        }
    }
}

/// One registered device. `Debug` and `Display` never show keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub dev_eui: Eui64,
    /// Display name, 1 to 64 printable characters.
    pub name: String,
    /// Device profile (payload codec), 1 to 64 of `[A-Za-z0-9_.-]`.
    pub profile: String,
    pub activation: Activation,
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} profile {} {}",
            self.dev_eui, self.name, self.profile, self.activation
        )
    }
}

/// One value of the `AddDevice` `a{sv}` dictionary, as converted by the
/// D-Bus side.
///
/// `Debug` does not show string contents (they may be keys): it prints
/// `Str(<N chars>)`.
#[derive(Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// D-Bus `s`.
    Str(String),
    /// D-Bus `b`.
    Bool(bool),
    /// Any other D-Bus type, carrying its signature (e.g. `"t"`, `"ay"`):
    /// refused by validation naming the key, like a wrong `s`/`b`.
    Other(String),
}

impl fmt::Debug for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Str(s) => write!(f, "Str(<{} chars>)", s.chars().count()),
            FieldValue::Bool(b) => write!(f, "Bool({b})"),
            FieldValue::Other(sig) => write!(f, "Other({})", printable_excerpt(sig)),
        }
    }
}

/// A validated `AddDevice` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest {
    pub spec: DeviceSpec,
    /// Replace an existing device with this DevEUI instead of failing with
    /// [`RegistryError::AlreadyExists`].
    pub replace: bool,
}

/// Every key `AddDevice` accepts.
pub const ADD_DEVICE_KEYS: [&str; 9] = [
    "dev_eui",
    "name",
    "profile",
    "join_eui",
    "app_key",
    "dev_addr",
    "nwk_s_key",
    "app_s_key",
    "replace",
];
const OTAA_KEYS: [&str; 2] = ["join_eui", "app_key"];
const ABP_KEYS: [&str; 3] = ["dev_addr", "nwk_s_key", "app_s_key"];
/// Default device profile.
pub const DEFAULT_PROFILE: &str = "cayenne";
const MAX_NAME_CHARS: usize = 64;
const MAX_PROFILE_CHARS: usize = 64;

fn invalid(key: &str, message: impl fmt::Display) -> RegistryError {
    RegistryError::Invalid {
        key: key.to_owned(),
        message: message.to_string(),
    }
}

/// A client-supplied string made safe to put into an error message or a
/// log line: control characters escaped, at most 64 characters.
fn printable_excerpt(s: &str) -> String {
    if s.is_empty() {
        return "\"\"".to_owned();
    }
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

/// Printable: not a control character, and none of the invisible
/// formatting characters that can disguise a name (zero-width spaces and
/// joiners, bidirectional overrides and isolates, line/paragraph
/// separators, BOM, interlinear annotation).
fn is_printable(c: char) -> bool {
    !c.is_control()
        && !matches!(c,
            '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}')
}

fn check_name(name: &str) -> Result<(), RegistryError> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(invalid(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters, got {n}"),
        ));
    }
    if let Some(i) = name.chars().position(|c| !is_printable(c)) {
        return Err(invalid(
            "name",
            format!("character {} is not printable", i + 1),
        ));
    }
    Ok(())
}

fn check_profile(profile: &str) -> Result<(), RegistryError> {
    let n = profile.chars().count();
    if n == 0 || n > MAX_PROFILE_CHARS {
        return Err(invalid(
            "profile",
            format!("must be 1 to {MAX_PROFILE_CHARS} characters, got {n}"),
        ));
    }
    if let Some(i) = profile
        .chars()
        .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(invalid(
            "profile",
            format!("character {} is not one of A-Z a-z 0-9 _ . -", i + 1),
        ));
    }
    Ok(())
}

/// The checks on a spec that do not depend on how it was built (the
/// fields are public, so [`LoraRegistry::add`] re-checks them).
fn check_spec(spec: &DeviceSpec) -> Result<(), RegistryError> {
    check_name(&spec.name)?;
    check_profile(&spec.profile)
}

impl AddRequest {
    /// Validates an `AddDevice` dictionary (`docs/dbus.md`,
    /// `io.gatewayd.Gateway1.LoRaWAN`). Every refusal is
    /// [`RegistryError::Invalid`] naming one key; messages never quote
    /// the submitted values.
    ///
    /// Checked in this order, the first failure is returned:
    /// 1. each key, in sorted order: unknown → `"<key>: unknown key"`;
    ///    `replace` not a boolean or another key not a string → wrong type;
    /// 2. `dev_eui` present and a valid EUI;
    /// 3. activation: OTAA keys (`join_eui`, `app_key`) and ABP keys
    ///    (`dev_addr`, `nwk_s_key`, `app_s_key`) mixed → names the first ABP
    ///    key given; none at all → names `join_eui`; an incomplete set →
    ///    names the first missing key;
    /// 4. activation values (hex lengths), then `name`, then `profile`.
    pub fn from_fields(fields: &BTreeMap<String, FieldValue>) -> Result<AddRequest, RegistryError> {
        for (key, value) in fields {
            match key.as_str() {
                "replace" => match value {
                    FieldValue::Bool(_) => {}
                    FieldValue::Str(_) => {
                        return Err(invalid(key, "must be a boolean (b), got a string"))
                    }
                    FieldValue::Other(sig) => {
                        return Err(invalid(
                            key,
                            format!("must be a boolean (b), got type {}", printable_excerpt(sig)),
                        ))
                    }
                },
                k if ADD_DEVICE_KEYS.contains(&k) => match value {
                    FieldValue::Str(_) => {}
                    FieldValue::Bool(_) => {
                        return Err(invalid(key, "must be a string (s), got a boolean"))
                    }
                    FieldValue::Other(sig) => {
                        return Err(invalid(
                            key,
                            format!("must be a string (s), got type {}", printable_excerpt(sig)),
                        ))
                    }
                },
                _ => return Err(invalid(&printable_excerpt(key), "unknown key")),
            }
        }
        let text = |key: &str| match fields.get(key) {
            Some(FieldValue::Str(s)) => Some(s.as_str()),
            _ => None,
        };

        let dev_eui: Eui64 = text("dev_eui")
            .ok_or_else(|| invalid("dev_eui", "required"))?
            .parse()
            .map_err(|e| invalid("dev_eui", e))?;

        let otaa: Vec<&str> = OTAA_KEYS
            .into_iter()
            .filter(|k| fields.contains_key(*k))
            .collect();
        let abp: Vec<&str> = ABP_KEYS
            .into_iter()
            .filter(|k| fields.contains_key(*k))
            .collect();
        let required = |key: &str, mode: &str, set: &[&str]| {
            text(key).ok_or_else(|| {
                invalid(
                    key,
                    format!("required for an {mode} device ({})", set.join(", ")),
                )
            })
        };
        let key_value = |key: &str, s: &str| AesKey::from_hex(s).map_err(|e| invalid(key, e));
        let activation = match (otaa.is_empty(), abp.is_empty()) {
            (false, false) => {
                return Err(invalid(
                    abp[0],
                    format!(
                        "is an ABP key but {} (OTAA) is also given: a device is either OTAA \
                         (join_eui, app_key) or ABP (dev_addr, nwk_s_key, app_s_key)",
                        otaa.join(", ")
                    ),
                ))
            }
            (true, true) => {
                return Err(invalid(
                    "join_eui",
                    "required: give join_eui and app_key (OTAA), or dev_addr, nwk_s_key and \
                     app_s_key (ABP)",
                ))
            }
            (false, true) => {
                let join_eui = required("join_eui", "OTAA", &OTAA_KEYS)?;
                let app_key = required("app_key", "OTAA", &OTAA_KEYS)?;
                Activation::Otaa {
                    join_eui: join_eui.parse().map_err(|e| invalid("join_eui", e))?,
                    app_key: key_value("app_key", app_key)?,
                }
            }
            (true, false) => {
                let dev_addr = required("dev_addr", "ABP", &ABP_KEYS)?;
                let nwk_s_key = required("nwk_s_key", "ABP", &ABP_KEYS)?;
                let app_s_key = required("app_s_key", "ABP", &ABP_KEYS)?;
                Activation::Abp {
                    dev_addr: dev_addr.parse().map_err(|e| invalid("dev_addr", e))?,
                    nwk_s_key: key_value("nwk_s_key", nwk_s_key)?,
                    app_s_key: key_value("app_s_key", app_s_key)?,
                }
            }
        };

        let name = match text("name") {
            Some(n) => {
                check_name(n)?;
                n.to_owned()
            }
            None => dev_eui.to_string(),
        };
        let profile = match text("profile") {
            Some(p) => {
                check_profile(p)?;
                p.to_owned()
            }
            None => DEFAULT_PROFILE.to_owned(),
        };
        let replace = matches!(fields.get("replace"), Some(FieldValue::Bool(true)));

        Ok(AddRequest {
            spec: DeviceSpec {
                dev_eui,
                name,
                profile,
                activation,
            },
            replace,
        })
    }
}

/// What `ListDevices` shows of a device: identifiers, never keys.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceSummary {
    /// 16 uppercase hex digits.
    pub dev_eui: String,
    pub name: String,
    pub profile: String,
    /// `"otaa"` or `"abp"`.
    pub activation: String,
    /// OTAA only: 16 uppercase hex digits.
    pub join_eui: Option<String>,
    /// ABP only (for now; joined OTAA devices later): 8 uppercase hex digits.
    pub dev_addr: Option<String>,
    /// When this DevEUI was first added (unix ms); `replace` keeps it.
    pub created_ms: u64,
}

/// Everything the registry refuses or fails with. `Display` is what goes
/// into the D-Bus error message; no variant ever carries key material.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `io.gatewayd.Error.InvalidValue`: the message starts with the key.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// `io.gatewayd.Error.AlreadyExists` (canonical DevEUI).
    #[error("device {0} already exists (use replace)")]
    AlreadyExists(String),
    /// `io.gatewayd.Error.NotFound` (canonical DevEUI).
    #[error("no device {0}")]
    NotFound(String),
    /// `io.gatewayd.Error.LimitExceeded`: the device's downlink queue holds
    /// [`crate::downlinks::MAX_QUEUED`] items.
    #[error("the downlink queue of {dev_eui} is full ({capacity} items)")]
    QueueFull { dev_eui: String, capacity: usize },
    /// `io.gatewayd.Error.Failed`: the database could not be opened, read
    /// or written.
    #[error("{path}: {message}")]
    Storage { path: String, message: String },
}

// ---------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------

/// Current schema version (`PRAGMA user_version`). 1: `devices`;
/// 2: `downlinks` added.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA_V1: &str = "
CREATE TABLE devices (
    dev_eui    TEXT    NOT NULL PRIMARY KEY CHECK (length(dev_eui) = 16),
    name       TEXT    NOT NULL,
    profile    TEXT    NOT NULL,
    activation TEXT    NOT NULL CHECK (activation IN ('otaa', 'abp')),
    join_eui   TEXT    CHECK (join_eui IS NULL OR length(join_eui) = 16),
    app_key    BLOB    CHECK (app_key IS NULL OR length(app_key) = 16),
    dev_addr   INTEGER CHECK (dev_addr IS NULL OR dev_addr BETWEEN 0 AND 4294967295),
    nwk_s_key  BLOB    CHECK (nwk_s_key IS NULL OR length(nwk_s_key) = 16),
    app_s_key  BLOB    CHECK (app_s_key IS NULL OR length(app_s_key) = 16),
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    CHECK ((activation = 'otaa' AND join_eui IS NOT NULL AND app_key IS NOT NULL
            AND dev_addr IS NULL AND nwk_s_key IS NULL AND app_s_key IS NULL)
        OR (activation = 'abp' AND join_eui IS NULL AND app_key IS NULL
            AND dev_addr IS NOT NULL AND nwk_s_key IS NOT NULL AND app_s_key IS NOT NULL))
) STRICT;
CREATE INDEX devices_by_dev_addr ON devices (dev_addr) WHERE dev_addr IS NOT NULL;
";

/// The application downlink queue (see [`crate::downlinks`]).
/// AUTOINCREMENT: an id is never reused, so the network server can tell
/// new rows by id.
const SCHEMA_V2: &str = "
CREATE TABLE downlinks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    dev_eui    TEXT    NOT NULL CHECK (length(dev_eui) = 16),
    fport      INTEGER NOT NULL CHECK (fport BETWEEN 1 AND 223),
    payload    BLOB    NOT NULL,
    confirmed  INTEGER NOT NULL CHECK (confirmed IN (0, 1)),
    created_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX downlinks_by_device ON downlinks (dev_eui, id);
";

const SPEC_COLUMNS: &str =
    "dev_eui, name, profile, activation, join_eui, app_key, dev_addr, nwk_s_key, app_s_key";

/// The LoRaWAN device registry. Cheap to clone (shared state behind an
/// `Arc`); all methods are blocking (SQLite, fsync on writes): call them
/// from `spawn_blocking` in async code.
///
/// For the network server: subscribe with [`generation`](Self::generation)
/// *before* loading ([`all`](Self::all), [`get`](Self::get),
/// [`by_dev_addr`](Self::by_dev_addr)), keep the devices in memory, and
/// reload when the generation changes.
#[derive(Clone)]
pub struct LoraRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    generation: watch::Sender<u64>,
}

impl fmt::Debug for LoraRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoraRegistry")
            .field("path", &self.inner.path)
            .field("generation", &*self.inner.generation.borrow())
            .finish()
    }
}

fn storage_error(path: &Path, message: impl fmt::Display) -> RegistryError {
    RegistryError::Storage {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(unix)]
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Creates the database file with mode 0600 if it does not exist, and
/// tightens it (and any `-wal`, `-shm`, `-journal` beside it) to 0600 if
/// group or others have any access.
#[cfg(unix)]
fn secure_files(path: &Path) -> Result<(), RegistryError> {
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| storage_error(path, format!("cannot open: {e}")))?;
    tighten(path, &file)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let p = sibling(path, suffix);
        match OpenOptions::new().read(true).open(&p) {
            Ok(f) => tighten(&p, &f)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(storage_error(&p, format!("cannot open: {e}"))),
        }
    }
    Ok(())
}

#[cfg(unix)]
fn tighten(path: &Path, file: &std::fs::File) -> Result<(), RegistryError> {
    use std::os::unix::fs::PermissionsExt;

    let meta = file
        .metadata()
        .map_err(|e| storage_error(path, format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(storage_error(path, "not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| storage_error(path, format!("cannot change mode to 0600: {e}")))?;
        tracing::warn!(
            path = %path.display(),
            old_mode = format_args!("{mode:04o}"),
            "LoRaWAN registry file was readable by others (it holds device keys); mode set to 0600"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn secure_files(path: &Path) -> Result<(), RegistryError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
        .map_err(|e| storage_error(path, format!("cannot open: {e}")))
}

impl LoraRegistry {
    /// Opens (creating if needed) the registry database at `path`, normally
    /// `<data_dir>/lorawan.db`. The parent directory must exist.
    ///
    /// The file is created with mode 0600; an existing file (or WAL/SHM
    /// file) that group or others can access is set to 0600 with a warning.
    /// Journal mode WAL, `synchronous = FULL`, `secure_delete = ON`. A
    /// database of a newer schema version is refused.
    pub fn open(path: &Path) -> Result<LoraRegistry, RegistryError> {
        secure_files(path)?;
        let err = |e: rusqlite::Error| storage_error(path, e);
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(storage_error(
                path,
                format!("cannot switch to WAL journal mode (got {mode})"),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        // Deleted and replaced keys are overwritten, not left in free pages.
        conn.pragma_update(None, "secure_delete", true)
            .map_err(err)?;
        migrate(&mut conn).map_err(|e| match e {
            MigrateError::Sql(e) => err(e),
            MigrateError::Unsupported(v) => storage_error(
                path,
                format!(
                    "schema version {v} is not supported (this gatewayd knows versions up to \
                     {SCHEMA_VERSION}; was the file written by a newer one?)"
                ),
            ),
        })?;
        // SQLite gives the WAL and SHM files the database's mode; this
        // catches stale ones left from before with a looser mode.
        secure_files(path)?;
        let (generation, _) = watch::channel(0);
        Ok(LoraRegistry {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                conn: Mutex::new(conn),
                generation,
            }),
        })
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves at worst an open
        // transaction, which rusqlite rolls back when it is dropped.
        self.inner.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn storage(&self, message: impl fmt::Display) -> RegistryError {
        storage_error(&self.inner.path, message)
    }

    /// After a write: fold the WAL into the database and truncate it, so
    /// superseded key material does not linger in the WAL. Best effort.
    fn checkpoint(&self, conn: &Connection) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!(path = %self.inner.path.display(), error = %e, "LoRaWAN registry checkpoint failed");
        }
    }

    pub(crate) fn bump(&self) {
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// Adds a device (durably, before returning). Fails with
    /// `AlreadyExists` if the DevEUI is registered and `replace` is false,
    /// and with `Invalid("dev_addr", …)` if another ABP device uses the
    /// DevAddr. A replaced device keeps its `created_ms`.
    pub fn add(&self, req: AddRequest) -> Result<(), RegistryError> {
        let AddRequest { spec, replace } = req;
        check_spec(&spec)?;
        let eui = spec.dev_eui.to_string();
        let sql = |e: rusqlite::Error| self.storage(e);

        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT created_ms FROM devices WHERE dev_eui = ?1",
                [&eui],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        if existing.is_some() && !replace {
            return Err(RegistryError::AlreadyExists(eui));
        }
        if let Activation::Abp { dev_addr, .. } = &spec.activation {
            let other: Option<String> = tx
                .query_row(
                    "SELECT dev_eui FROM devices
                     WHERE activation = 'abp' AND dev_addr = ?1 AND dev_eui <> ?2
                     ORDER BY dev_eui LIMIT 1",
                    params![dev_addr.0, eui],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)?;
            if let Some(other) = other {
                return Err(invalid(
                    "dev_addr",
                    format!("{dev_addr} is already used by ABP device {other}"),
                ));
            }
        }
        let now = now_ms() as i64;
        let created = existing.unwrap_or(now);
        tx.execute("DELETE FROM devices WHERE dev_eui = ?1", [&eui])
            .map_err(sql)?;
        match &spec.activation {
            Activation::Otaa { join_eui, app_key } => tx.execute(
                "INSERT INTO devices (dev_eui, name, profile, activation, join_eui, app_key,
                                      created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, 'otaa', ?4, ?5, ?6, ?7)",
                params![
                    eui,
                    spec.name,
                    spec.profile,
                    join_eui.to_string(),
                    &app_key.0[..],
                    created,
                    now
                ],
            ),
            Activation::Abp {
                dev_addr,
                nwk_s_key,
                app_s_key,
            } => tx.execute(
                "INSERT INTO devices (dev_eui, name, profile, activation, dev_addr, nwk_s_key,
                                      app_s_key, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, 'abp', ?4, ?5, ?6, ?7, ?8)",
                params![
                    eui,
                    spec.name,
                    spec.profile,
                    dev_addr.0,
                    &nwk_s_key.0[..],
                    &app_s_key.0[..],
                    created,
                    now
                ],
            ),
        }
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        self.checkpoint(&conn);
        self.bump();
        drop(conn);
        tracing::info!(
            dev_eui = %eui,
            name = %printable_excerpt(&spec.name),
            activation = spec.activation.kind(),
            replaced = existing.is_some(),
            "LoRaWAN device added"
        );
        Ok(())
    }

    /// Removes a device. `dev_eui` is parsed like `AddDevice`'s (`Invalid`
    /// naming `dev_eui` if malformed); `NotFound` if not registered.
    pub fn remove(&self, dev_eui: &str) -> Result<(), RegistryError> {
        let eui: Eui64 = dev_eui.parse().map_err(|e| invalid("dev_eui", e))?;
        let eui = eui.to_string();
        let mut conn = self.lock();
        let sql = |e: rusqlite::Error| self.storage(e);
        let tx = conn.transaction().map_err(sql)?;
        let n = tx
            .execute("DELETE FROM devices WHERE dev_eui = ?1", [&eui])
            .map_err(sql)?;
        if n == 0 {
            return Err(RegistryError::NotFound(eui));
        }
        // Its queued downlinks go with it.
        tx.execute("DELETE FROM downlinks WHERE dev_eui = ?1", [&eui])
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        self.checkpoint(&conn);
        self.bump();
        drop(conn);
        tracing::info!(dev_eui = %eui, "LoRaWAN device removed");
        Ok(())
    }

    /// Every device, sorted by DevEUI, without keys (`ListDevices`).
    pub fn list(&self) -> Result<Vec<DeviceSummary>, RegistryError> {
        let sql = |e: rusqlite::Error| self.storage(e);
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT dev_eui, name, profile, activation, join_eui, dev_addr, created_ms
                 FROM devices ORDER BY dev_eui",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| {
                let dev_addr: Option<u32> = r.get(5)?;
                let created: i64 = r.get(6)?;
                Ok(DeviceSummary {
                    dev_eui: r.get(0)?,
                    name: r.get(1)?,
                    profile: r.get(2)?,
                    activation: r.get(3)?,
                    join_eui: r.get(4)?,
                    dev_addr: dev_addr.map(|a| DevAddr(a).to_string()),
                    created_ms: created.max(0) as u64,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    /// One device with its keys (for the join handler; in-process only).
    pub fn get(&self, dev_eui: Eui64) -> Result<Option<DeviceSpec>, RegistryError> {
        let mut v = self.query_specs(
            &format!("SELECT {SPEC_COLUMNS} FROM devices WHERE dev_eui = ?1"),
            [dev_eui.to_string()],
        )?;
        Ok(v.pop())
    }

    /// The ABP devices with this DevAddr, sorted by DevEUI, with their
    /// session keys (in-process only). A `Vec` because addresses may be
    /// shared once OTAA sessions are stored.
    pub fn by_dev_addr(&self, addr: DevAddr) -> Result<Vec<DeviceSpec>, RegistryError> {
        self.query_specs(
            &format!(
                "SELECT {SPEC_COLUMNS} FROM devices
                 WHERE activation = 'abp' AND dev_addr = ?1 ORDER BY dev_eui"
            ),
            [addr.0],
        )
    }

    /// Every device with its keys, sorted by DevEUI (in-process only): one
    /// consistent snapshot for the network server's in-memory tables.
    pub fn all(&self) -> Result<Vec<DeviceSpec>, RegistryError> {
        self.query_specs(
            &format!("SELECT {SPEC_COLUMNS} FROM devices ORDER BY dev_eui"),
            [],
        )
    }

    /// A receiver of the registry's generation: 0 when opened, incremented
    /// after every successful `add` or `remove` (once committed). Subscribe
    /// before loading, then reload whenever it changes.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    fn query_specs(
        &self,
        sql_text: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<DeviceSpec>, RegistryError> {
        let sql = |e: rusqlite::Error| self.storage(e);
        let conn = self.lock();
        let mut stmt = conn.prepare(sql_text).map_err(sql)?;
        let mut rows = stmt.query(params).map_err(sql)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql)? {
            out.push(self.decode(row)?);
        }
        Ok(out)
    }

    /// A row of [`SPEC_COLUMNS`] to a spec. Errors name the device and
    /// column, never a value.
    fn decode(&self, row: &Row<'_>) -> Result<DeviceSpec, RegistryError> {
        let sql = |e: rusqlite::Error| self.storage(e);
        let eui_text: String = row.get(0).map_err(sql)?;
        let dev_eui: Eui64 = eui_text
            .parse()
            .map_err(|e| self.storage(format!("stored dev_eui is malformed: {e}")))?;
        let corrupt = |column: &str, what: &dyn fmt::Display| {
            self.storage(format!("device {dev_eui}: stored {column} {what}"))
        };
        let key = |idx: usize, column: &str| -> Result<AesKey, RegistryError> {
            let value = row.get_ref(idx).map_err(sql)?;
            let bytes = value
                .as_blob()
                .map_err(|_| corrupt(column, &"is not a blob"))?;
            if bytes.len() != 16 {
                return Err(corrupt(
                    column,
                    &format_args!("has {} bytes, expected 16", bytes.len()),
                ));
            }
            let mut k = AesKey([0; 16]);
            k.0.copy_from_slice(bytes);
            Ok(k)
        };
        let activation: String = row.get(3).map_err(sql)?;
        let activation = match activation.as_str() {
            "otaa" => {
                let join: String = row.get(4).map_err(sql)?;
                Activation::Otaa {
                    join_eui: join
                        .parse()
                        .map_err(|e| corrupt("join_eui", &format_args!("is malformed: {e}")))?,
                    app_key: key(5, "app_key")?,
                }
            }
            "abp" => Activation::Abp {
                dev_addr: DevAddr(row.get(6).map_err(sql)?),
                nwk_s_key: key(7, "nwk_s_key")?,
                app_s_key: key(8, "app_s_key")?,
            },
            other => {
                return Err(corrupt(
                    "activation",
                    &format_args!("is unknown ({})", printable_excerpt(other)),
                ))
            }
        };
        Ok(DeviceSpec {
            dev_eui,
            name: row.get(1).map_err(sql)?,
            profile: row.get(2).map_err(sql)?,
            activation,
        })
    }
}

enum MigrateError {
    Sql(rusqlite::Error),
    Unsupported(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sql(e)
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] inside one immediate
/// transaction (so two processes opening a new file cannot both create it).
fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        0 | 1 => {
            if version == 0 {
                tx.execute_batch(SCHEMA_V1)?;
            }
            tx.execute_batch(SCHEMA_V2)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
            Ok(())
        }
        SCHEMA_VERSION => Ok(()),
        // Newer (or negative: not ours).
        v => Err(MigrateError::Unsupported(v)),
    }
}
