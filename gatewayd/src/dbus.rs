//! The D-Bus service `io.gatewayd.Gateway1` (zbus). The interface is
//! specified in `docs/dbus.md`; this module maps it onto [`Shared`].
//!
//! * [`Gateway`]: status properties, devices, configuration, buffer flush;
//! * [`AppsIface`]: edge apps through the deployment directory;
//! * [`LoraIface`]: the LoRaWAN device registry.
//!
//! Every method that changes state first calls [`Service::authorize`]: the
//! bus policy should already have refused an unauthorised caller, but the
//! daemon checks the caller's credentials itself (defence in depth).
//!
//! [`serve`] connects (retrying while the bus is absent: gatewayd keeps
//! collecting telemetry without it), serves the interfaces, and turns
//! daemon events into signals until `stop`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use gatewayd_adapter_lorawan::{AddRequest, FieldValue, RegistryError};
use gatewayd_devices::{DeviceEvent, DeviceInfo};
use gatewayd_edge::{AppEventKind, AppStatus, EdgeError};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zbus::message::{Header, Message};
use zbus::names::{BusName, ErrorName};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedValue, Value};
use zbus::{interface, Connection};

use crate::config::BusChoice;
use crate::config_edit::{Edit, EditError};
use crate::control::{self, unix_ms, ChangeError, Shared};

pub const BUS_NAME: &str = "io.gatewayd.Gateway1";
pub const OBJECT_PATH: &str = "/io/gatewayd/Gateway1";
/// Largest bundle accepted over D-Bus (the system bus's default message
/// limit is 32 MiB).
pub const MAX_BUNDLE_BYTES: usize = 32 * 1024 * 1024;

/// How long `SourceCommand` waits for a source (and through it a device)
/// to answer. Sources time their own device round trips out sooner.
pub const SOURCE_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The errors of docs/dbus.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    UnknownKey,
    InvalidValue,
    NotSet,
    NotPersistent,
    NotFound,
    AlreadyExists,
    AppRefused,
    Unavailable,
    LimitExceeded,
    Failed,
    Timeout,
    Refused,
    NotSupported,
    AccessDenied,
}

impl ErrorKind {
    fn name(self) -> &'static str {
        match self {
            ErrorKind::UnknownKey => "io.gatewayd.Error.UnknownKey",
            ErrorKind::InvalidValue => "io.gatewayd.Error.InvalidValue",
            ErrorKind::NotSet => "io.gatewayd.Error.NotSet",
            ErrorKind::NotPersistent => "io.gatewayd.Error.NotPersistent",
            ErrorKind::NotFound => "io.gatewayd.Error.NotFound",
            ErrorKind::AlreadyExists => "io.gatewayd.Error.AlreadyExists",
            ErrorKind::AppRefused => "io.gatewayd.Error.AppRefused",
            ErrorKind::Unavailable => "io.gatewayd.Error.Unavailable",
            ErrorKind::LimitExceeded => "io.gatewayd.Error.LimitExceeded",
            ErrorKind::Failed => "io.gatewayd.Error.Failed",
            ErrorKind::Timeout => "io.gatewayd.Error.Timeout",
            ErrorKind::Refused => "io.gatewayd.Error.Refused",
            ErrorKind::NotSupported => "io.gatewayd.Error.NotSupported",
            ErrorKind::AccessDenied => "org.freedesktop.DBus.Error.AccessDenied",
        }
    }
}

/// A D-Bus error reply: a name from docs/dbus.md and a message.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for Error {}

impl zbus::DBusError for Error {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name())?.build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(self.kind.name())
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}

impl From<zbus::Error> for Error {
    fn from(e: zbus::Error) -> Self {
        Error::new(ErrorKind::Failed, e.to_string())
    }
}

impl From<EditError> for Error {
    fn from(e: EditError) -> Self {
        let kind = match &e {
            EditError::UnknownKey(_) => ErrorKind::UnknownKey,
            EditError::Invalid(_) => ErrorKind::InvalidValue,
            EditError::NotSet(_) => ErrorKind::NotSet,
        };
        Error::new(kind, e.to_string())
    }
}

impl From<ChangeError> for Error {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Edit(e) => e.into(),
            ChangeError::NotPersistent => Error::new(ErrorKind::NotPersistent, e.to_string()),
            ChangeError::Io(m) => Error::new(ErrorKind::Failed, m),
        }
    }
}

impl From<EdgeError> for Error {
    fn from(e: EdgeError) -> Self {
        let kind = match &e {
            EdgeError::NotDeployed(_) => ErrorKind::NotFound,
            EdgeError::Stopped => ErrorKind::Unavailable,
            EdgeError::Io { .. } | EdgeError::Db(_) | EdgeError::Engine(_) => ErrorKind::Failed,
            _ => ErrorKind::AppRefused,
        };
        Error::new(kind, e.to_string())
    }
}

impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Self {
        let kind = match &e {
            RegistryError::Invalid { .. } => ErrorKind::InvalidValue,
            RegistryError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            RegistryError::NotFound(_) => ErrorKind::NotFound,
            RegistryError::QueueFull { .. } => ErrorKind::LimitExceeded,
            RegistryError::Storage { .. } => ErrorKind::Failed,
        };
        Error::new(kind, e.to_string())
    }
}

type Result<T> = std::result::Result<T, Error>;

/// State common to the three interfaces.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
    write_group: String,
    own_uid: u32,
}

impl Service {
    /// Refuses a write by a caller who is not root, our own user or in
    /// `dbus.write_group`. Asks the bus who the caller is.
    async fn authorize(&self, conn: &Connection, hdr: &Header<'_>, what: &str) -> Result<()> {
        let sender = hdr
            .sender()
            .ok_or_else(|| Error::new(ErrorKind::AccessDenied, "the call has no sender"))?;
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let creds = dbus
            .get_connection_credentials(BusName::Unique(sender.to_owned()))
            .await
            .map_err(|e| Error::new(ErrorKind::AccessDenied, format!("caller unknown: {e}")))?;
        let Some(uid) = creds.unix_user_id() else {
            return Err(Error::new(
                ErrorKind::AccessDenied,
                "the bus did not say who the caller is",
            ));
        };
        let gids = match creds.unix_group_ids() {
            Some(g) => g.clone(),
            None => creds
                .process_id()
                .map(control::process_groups)
                .unwrap_or_default(),
        };
        let group = control::group_id(&self.write_group);
        if control::may_write(uid, &gids, self.own_uid, group) {
            Ok(())
        } else {
            warn!(uid, sender = %sender, call = what, "D-Bus write refused: caller is not root, gatewayd's user or in the write group");
            Err(Error::new(
                ErrorKind::AccessDenied,
                format!(
                    "{what} changes the gateway: only root, gatewayd's user and members of group {:?} may call it",
                    self.write_group
                ),
            ))
        }
    }
}

fn ov(v: Value<'_>) -> OwnedValue {
    // Only values carrying file descriptors fail to convert; we build none.
    v.try_into_owned()
        .unwrap_or_else(|_| OwnedValue::from(zbus::zvariant::Str::from("")))
}

type Dict = HashMap<String, OwnedValue>;

/// JSON (the effective configuration) → a D-Bus value: string `s`,
/// integer `x` (or `t` above i64), float `d`, bool `b`, array `av`, table
/// `a{sv}`.
pub fn json_to_value(j: &Json) -> Value<'static> {
    match j {
        Json::Null => Value::from(""),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::from(s.clone()),
        Json::Array(a) => Value::from(a.iter().map(json_to_value).collect::<Vec<Value>>()),
        Json::Object(m) => {
            let d: HashMap<String, Value> = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect();
            Value::from(d)
        }
    }
}

/// A D-Bus value → a TOML value for `SetConfig`.
pub fn value_to_toml(v: &Value<'_>, key: &str) -> Result<toml_edit::Value> {
    let bad = |what: &str| {
        Error::new(
            ErrorKind::InvalidValue,
            format!("{key}: D-Bus type {what} has no TOML equivalent"),
        )
    };
    Ok(match v {
        Value::Bool(b) => (*b).into(),
        Value::U8(n) => i64::from(*n).into(),
        Value::I16(n) => i64::from(*n).into(),
        Value::U16(n) => i64::from(*n).into(),
        Value::I32(n) => i64::from(*n).into(),
        Value::U32(n) => i64::from(*n).into(),
        Value::I64(n) => (*n).into(),
        Value::U64(n) => i64::try_from(*n)
            .map_err(|_| {
                Error::new(
                    ErrorKind::InvalidValue,
                    format!("{key}: {n} is larger than TOML integers allow"),
                )
            })?
            .into(),
        Value::F64(f) => (*f).into(),
        Value::Str(s) => s.as_str().into(),
        Value::Value(inner) => value_to_toml(inner, key)?,
        Value::Array(a) => {
            let mut arr = toml_edit::Array::new();
            for item in a.inner() {
                arr.push(value_to_toml(item, key)?);
            }
            arr.into()
        }
        Value::Dict(d) => {
            let mut t = toml_edit::InlineTable::new();
            for (k, v) in d.iter() {
                let Value::Str(k) = k else {
                    return Err(bad("dictionary with non-string keys"));
                };
                t.insert(
                    k.as_str(),
                    value_to_toml(v, &format!("{key}.{}", k.as_str()))?,
                );
            }
            t.into()
        }
        Value::Signature(_) => return Err(bad("signature")),
        Value::ObjectPath(_) => return Err(bad("object path")),
        Value::Structure(_) => return Err(bad("struct")),
        _ => return Err(bad("fd/maybe")),
    })
}

fn device_dict(d: &DeviceInfo) -> Dict {
    let mut m = Dict::new();
    m.insert("id".into(), ov(Value::from(d.id.clone())));
    m.insert("transport".into(), ov(Value::from(d.transport.clone())));
    if let Some(s) = &d.source {
        m.insert("source".into(), ov(Value::from(s.clone())));
    }
    m.insert("first_seen".into(), ov(Value::from(d.first_seen_ms)));
    m.insert("last_seen".into(), ov(Value::from(d.last_seen_ms)));
    m.insert("readings".into(), ov(Value::from(d.readings)));
    m.insert("state".into(), ov(Value::from(d.state())));
    for (k, v) in [("rssi", d.rssi), ("snr", d.snr), ("battery", d.battery)] {
        if let Some(v) = v {
            m.insert(k.into(), ov(Value::from(v)));
        }
    }
    if let Some(f) = &d.firmware {
        m.insert("firmware".into(), ov(Value::from(f.clone())));
    }
    m
}

fn app_dict(a: &AppStatus) -> Dict {
    let mut m = Dict::new();
    for (k, v) in [
        ("name", &a.name),
        ("version", &a.version),
        ("state", &a.state),
        ("mode", &a.mode),
        ("on_failure", &a.on_failure),
        ("bundle_sha256", &a.bundle_sha256),
    ] {
        m.insert(k.into(), ov(Value::from(v.clone())));
    }
    for (k, v) in [
        ("calls", a.calls),
        ("readings_in", a.readings_in),
        ("dropped", a.dropped),
        ("replaced", a.replaced),
        ("emitted", a.emitted),
        ("alerts", a.alerts),
        ("failures", a.failures),
        ("held", a.held),
        ("disabled_for_ms", a.disabled_for_ms),
    ] {
        m.insert(k.into(), ov(Value::from(v)));
    }
    if let Some(e) = &a.last_error {
        m.insert("last_error".into(), ov(Value::from(e.clone())));
    }
    m
}

/// `io.gatewayd.Gateway1`.
pub struct Gateway(Service);

#[interface(name = "io.gatewayd.Gateway1")]
impl Gateway {
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        self.0.shared.version.to_owned()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn gateway_id(&self) -> String {
        self.0.shared.gateway_id.clone()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn started_at(&self) -> u64 {
        self.0.shared.started_at_ms
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn uptime(&self) -> u64 {
        self.0.shared.uptime().as_secs()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn config_file(&self) -> String {
        self.0
            .shared
            .config_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    #[zbus(property)]
    fn uplink_connected(&self) -> bool {
        self.0.shared.io.uplink.borrow().connected
    }

    #[zbus(property)]
    fn uplink_broker(&self) -> String {
        self.0.shared.io.uplink.borrow().broker.clone()
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn uplink_last_puback(&self) -> u64 {
        self.0
            .shared
            .io
            .uplink
            .borrow()
            .last_puback
            .map(unix_ms)
            .unwrap_or(0)
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn uplink_in_flight(&self) -> u32 {
        u32::try_from(self.0.shared.io.uplink.borrow().in_flight).unwrap_or(u32::MAX)
    }

    #[zbus(property)]
    fn uplink_last_error(&self) -> String {
        self.0
            .shared
            .io
            .uplink
            .borrow()
            .last_error
            .clone()
            .unwrap_or_default()
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn buffer_readings(&self) -> u64 {
        self.0.shared.io.buffer.stats().readings
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn buffer_bytes(&self) -> u64 {
        self.0.shared.io.buffer.stats().bytes
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn buffer_max_bytes(&self) -> u64 {
        self.0.shared.io.buffer.stats().max_bytes
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn buffer_policy(&self) -> String {
        serde_json::to_value(self.0.shared.boot.buffer.when_full)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    #[zbus(property(emits_changed_signal = "false"))]
    fn buffer_dropped(&self) -> HashMap<String, u64> {
        let s = self.0.shared.io.buffer.stats();
        HashMap::from([
            ("oldest".to_owned(), s.dropped_oldest),
            ("newest".to_owned(), s.dropped_newest),
            ("too_large".to_owned(), s.dropped_too_large),
        ])
    }

    #[zbus(property)]
    fn adapters(&self) -> Vec<(String, String, String, String)> {
        adapters(&self.0.shared)
    }

    #[zbus(property)]
    fn pending_restart(&self) -> Vec<String> {
        self.0.shared.pending_restart().borrow().clone()
    }

    async fn list_devices(&self) -> Vec<Dict> {
        self.0
            .shared
            .io
            .devices
            .list()
            .iter()
            .map(device_dict)
            .collect()
    }

    /// What a running source publishes about itself, as a JSON object
    /// (`null` when it has published nothing yet).
    async fn source_status(&self, name: String) -> Result<String> {
        let sources = self.0.shared.io.sources.borrow();
        let entry = sources.iter().find(|s| s.name == name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no source {name:?} is running"),
            )
        })?;
        let status = entry.status.borrow().to_string();
        Ok(status)
    }

    /// Sends a command to a running source and returns its answer. Both are
    /// JSON; what a source accepts is documented with its adapter (the
    /// `serial` source: `adapters/serial/README.md`).
    async fn source_command(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
        request: String,
    ) -> Result<String> {
        self.0.authorize(conn, &hdr, "SourceCommand").await?;
        let request: serde_json::Value = serde_json::from_str(&request)
            .map_err(|e| Error::new(ErrorKind::InvalidValue, format!("request: not JSON: {e}")))?;
        let sender = {
            let sources = self.0.shared.io.sources.borrow();
            let entry = sources.iter().find(|s| s.name == name).ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("no source {name:?} is running"),
                )
            })?;
            entry.commands.clone()
        };
        sender
            .call(request, SOURCE_COMMAND_TIMEOUT)
            .await
            .map(|v| v.to_string())
            .map_err(|e| {
                use gatewayd_core::CommandError as C;
                let kind = match &e {
                    C::InvalidArgument(_) => ErrorKind::InvalidValue,
                    C::NotFound(_) => ErrorKind::NotFound,
                    C::Timeout(_) => ErrorKind::Timeout,
                    C::Refused(_) => ErrorKind::Refused,
                    C::Busy => ErrorKind::LimitExceeded,
                    C::Unsupported => ErrorKind::NotSupported,
                    C::Closed => ErrorKind::Unavailable,
                    C::Failed(_) => ErrorKind::Failed,
                };
                Error::new(kind, format!("source {name:?}: {e}"))
            })
    }

    async fn get_config(&self, key: String) -> Result<OwnedValue> {
        let v = self.0.shared.get_config(&key)?;
        Ok(ov(json_to_value(&v)))
    }

    async fn set_config(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        key: String,
        value: OwnedValue,
    ) -> Result<String> {
        self.0.authorize(conn, &hdr, "SetConfig").await?;
        let v = value_to_toml(&value, &key)?;
        let outcome = self.0.shared.change(Edit::Set(key, v)).await?;
        Ok(outcome.as_str().to_owned())
    }

    async fn unset_config(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        key: String,
    ) -> Result<String> {
        self.0.authorize(conn, &hdr, "UnsetConfig").await?;
        let outcome = self.0.shared.change(Edit::Unset(key)).await?;
        Ok(outcome.as_str().to_owned())
    }

    #[zbus(out_args("applied", "restart_required"))]
    async fn reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(Vec<String>, Vec<String>)> {
        self.0.authorize(conn, &hdr, "Reload").await?;
        Ok(self.0.shared.reload().await?)
    }

    #[zbus(out_args("delivered", "remaining"))]
    async fn flush_buffer(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        timeout_ms: u32,
    ) -> Result<(u64, u64)> {
        self.0.authorize(conn, &hdr, "FlushBuffer").await?;
        let ms = if timeout_ms == 0 {
            30_000
        } else {
            timeout_ms.min(600_000)
        };
        Ok(self
            .0
            .shared
            .flush(Duration::from_millis(u64::from(ms)))
            .await)
    }

    #[zbus(signal)]
    async fn device_first_seen(
        e: &SignalEmitter<'_>,
        id: &str,
        transport: &str,
        source: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn device_lost(e: &SignalEmitter<'_>, id: &str, last_seen: u64) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn device_returned(e: &SignalEmitter<'_>, id: &str, lost_for_ms: u64)
        -> zbus::Result<()>;

    // Same name as the property: a signal and a property live apart.
    #[zbus(signal, name = "UplinkConnected")]
    async fn uplink_connected_signal(e: &SignalEmitter<'_>, broker: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn uplink_disconnected(
        e: &SignalEmitter<'_>,
        broker: &str,
        reason: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn buffer_high_water(
        e: &SignalEmitter<'_>,
        bytes: u64,
        max_bytes: u64,
    ) -> zbus::Result<()>;
}

fn adapters(shared: &Shared) -> Vec<(String, String, String, String)> {
    shared
        .io
        .sources
        .borrow()
        .iter()
        .map(|s| {
            let (state, detail) = control::state_words(&s.state.borrow());
            (s.name.clone(), s.kind.clone(), state.to_owned(), detail)
        })
        .collect()
}

/// `io.gatewayd.Gateway1.Apps`.
pub struct AppsIface(Service);

impl AppsIface {
    fn apps(&self) -> Result<&control::Apps> {
        self.0.shared.io.apps.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                "edge apps are disabled (edge_apps.enabled = false)",
            )
        })
    }

    async fn deploy_bundle(
        &self,
        bundle: Vec<u8>,
        must_exist: bool,
    ) -> Result<(String, String, String)> {
        let apps = self.apps()?;
        if bundle.len() > MAX_BUNDLE_BYTES {
            return Err(Error::new(
                ErrorKind::AppRefused,
                format!(
                    "bundle is {} bytes; at most {MAX_BUNDLE_BYTES} over D-Bus",
                    bundle.len()
                ),
            ));
        }
        let d = apps.deploy.deploy(bundle, must_exist).await?;
        Ok((d.name, d.version, d.previous_version.unwrap_or_default()))
    }
}

#[interface(name = "io.gatewayd.Gateway1.Apps")]
impl AppsIface {
    async fn list(&self) -> Result<Vec<Dict>> {
        Ok(self.apps()?.handle.list().iter().map(app_dict).collect())
    }

    #[zbus(out_args("name", "version", "previous_version"))]
    async fn deploy(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        bundle: Vec<u8>,
    ) -> Result<(String, String, String)> {
        self.0.authorize(conn, &hdr, "Apps.Deploy").await?;
        self.deploy_bundle(bundle, false).await
    }

    #[zbus(out_args("name", "version", "previous_version"))]
    async fn upgrade(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        bundle: Vec<u8>,
    ) -> Result<(String, String, String)> {
        self.0.authorize(conn, &hdr, "Apps.Upgrade").await?;
        self.deploy_bundle(bundle, true).await
    }

    async fn remove(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<()> {
        self.0.authorize(conn, &hdr, "Apps.Remove").await?;
        self.apps()?.deploy.remove(&name).await?;
        Ok(())
    }

    #[zbus(signal)]
    async fn app_deployed(
        e: &SignalEmitter<'_>,
        name: &str,
        version: &str,
        previous_version: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn app_removed(e: &SignalEmitter<'_>, name: &str, version: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn app_crashed(
        e: &SignalEmitter<'_>,
        name: &str,
        version: &str,
        fault: &str,
        reason: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn app_disabled(
        e: &SignalEmitter<'_>,
        name: &str,
        version: &str,
        for_ms: u64,
        reason: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn app_enabled(e: &SignalEmitter<'_>, name: &str, version: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn app_refused(
        e: &SignalEmitter<'_>,
        name: &str,
        file: &str,
        reason: &str,
    ) -> zbus::Result<()>;
}

/// `io.gatewayd.Gateway1.LoRaWAN`.
pub struct LoraIface(Service);

impl LoraIface {
    fn registry(&self) -> Result<gatewayd_adapter_lorawan::LoraRegistry> {
        self.0.shared.io.lora.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                "the LoRaWAN registry could not be opened (see gatewayd's log)",
            )
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(gatewayd_adapter_lorawan::LoraRegistry) -> std::result::Result<T, RegistryError>
            + Send
            + 'static,
    ) -> Result<T> {
        let reg = self.registry()?;
        tokio::task::spawn_blocking(move || f(reg))
            .await
            .map_err(|e| Error::new(ErrorKind::Failed, e.to_string()))?
            .map_err(Error::from)
    }
}

#[interface(name = "io.gatewayd.Gateway1.LoRaWAN")]
impl LoraIface {
    async fn list_devices(&self) -> Result<Vec<Dict>> {
        let list = self.blocking(|r| r.list()).await?;
        Ok(list
            .into_iter()
            .map(|d| {
                let mut m = Dict::new();
                m.insert("dev_eui".into(), ov(Value::from(d.dev_eui)));
                m.insert("name".into(), ov(Value::from(d.name)));
                m.insert("profile".into(), ov(Value::from(d.profile)));
                m.insert("activation".into(), ov(Value::from(d.activation)));
                if let Some(j) = d.join_eui {
                    m.insert("join_eui".into(), ov(Value::from(j)));
                }
                if let Some(a) = d.dev_addr {
                    m.insert("dev_addr".into(), ov(Value::from(a)));
                }
                m.insert("created".into(), ov(Value::from(d.created_ms)));
                m
            })
            .collect())
    }

    async fn add_device(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        device: HashMap<String, OwnedValue>,
    ) -> Result<()> {
        self.0.authorize(conn, &hdr, "LoRaWAN.AddDevice").await?;
        let mut fields = BTreeMap::new();
        for (k, v) in &device {
            let f = match &**v {
                Value::Str(s) => FieldValue::Str(s.as_str().to_owned()),
                Value::Bool(b) => FieldValue::Bool(*b),
                other => FieldValue::Other(other.value_signature().to_string()),
            };
            fields.insert(k.clone(), f);
        }
        let req = AddRequest::from_fields(&fields)?;
        let eui = req.spec.dev_eui.to_string();
        self.blocking(move |r| r.add(req)).await?;
        info!(dev_eui = %eui, "LoRaWAN device added");
        Ok(())
    }

    async fn remove_device(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        dev_eui: String,
    ) -> Result<()> {
        self.0.authorize(conn, &hdr, "LoRaWAN.RemoveDevice").await?;
        let eui = dev_eui.clone();
        self.blocking(move |r| r.remove(&eui)).await?;
        info!(dev_eui = %dev_eui, "LoRaWAN device removed");
        Ok(())
    }

    /// Queues an application downlink for the device's next uplink;
    /// returns its id.
    #[zbus(out_args("id"))]
    async fn enqueue_downlink(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        dev_eui: String,
        fport: u8,
        payload: Vec<u8>,
        confirmed: bool,
    ) -> Result<u64> {
        self.0
            .authorize(conn, &hdr, "LoRaWAN.EnqueueDownlink")
            .await?;
        self.blocking(move |r| r.enqueue_downlink(&dev_eui, fport, &payload, confirmed))
            .await
    }

    /// Queued downlinks of a device, or of all devices when `dev_eui` is
    /// empty, oldest first.
    async fn list_downlinks(&self, dev_eui: String) -> Result<Vec<Dict>> {
        let rows = self
            .blocking(move |r| {
                let eui = (!dev_eui.is_empty()).then_some(dev_eui.as_str());
                r.downlinks(eui, 0)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|d| {
                let mut m = Dict::new();
                m.insert("id".into(), ov(Value::from(d.id)));
                m.insert("dev_eui".into(), ov(Value::from(d.dev_eui)));
                m.insert("fport".into(), ov(Value::from(d.fport)));
                m.insert("payload".into(), ov(Value::from(d.payload)));
                m.insert("confirmed".into(), ov(Value::from(d.confirmed)));
                m.insert("created".into(), ov(Value::from(d.created_ms)));
                m
            })
            .collect())
    }

    /// Deletes a device's queued downlinks (all when `id` is 0); returns
    /// how many.
    #[zbus(out_args("removed"))]
    async fn clear_downlinks(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        dev_eui: String,
        id: u64,
    ) -> Result<u32> {
        self.0
            .authorize(conn, &hdr, "LoRaWAN.ClearDownlinks")
            .await?;
        let n = self
            .blocking(move |r| r.clear_downlinks(&dev_eui, (id != 0).then_some(id)))
            .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// Connects to the bus, serves until `stop`. While the bus is unreachable
/// (or the name is taken), retries with backoff up to 30 s.
pub async fn serve(
    shared: Arc<Shared>,
    bus: BusChoice,
    write_group: String,
    high_water_percent: u8,
    stop: CancellationToken,
) {
    let service = Service {
        shared: shared.clone(),
        write_group,
        own_uid: control::own_uid(),
    };
    let mut delay = Duration::from_millis(500);
    loop {
        let conn = match connect(&service, &bus).await {
            Ok(c) => c,
            Err(e) => {
                warn!(bus = ?bus, error = %e, retry_in_ms = delay.as_millis() as u64, "D-Bus: cannot serve io.gatewayd.Gateway1");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        delay = Duration::from_millis(500);
        info!(bus = ?bus, name = BUS_NAME, "D-Bus interface ready");
        let result = signals(&conn, &shared, high_water_percent, &stop).await;
        // Release the name at once so a successor can take it.
        let _ = conn.release_name(BUS_NAME).await;
        match result {
            Ok(()) => break,
            // Emitting failed: the bus went away (restarted). Serve again.
            Err(e) => warn!(error = %e, "D-Bus connection lost; reconnecting"),
        }
    }
    debug!("D-Bus interface closed");
}

async fn connect(service: &Service, bus: &BusChoice) -> zbus::Result<Connection> {
    let builder = match bus {
        BusChoice::System => zbus::connection::Builder::system()?,
        BusChoice::Session => zbus::connection::Builder::session()?,
        BusChoice::Address(a) => zbus::connection::Builder::address(a.as_str())?,
    };
    builder
        .serve_at(OBJECT_PATH, Gateway(service.clone()))?
        .serve_at(OBJECT_PATH, AppsIface(service.clone()))?
        .serve_at(OBJECT_PATH, LoraIface(service.clone()))?
        .name(BUS_NAME)?
        .build()
        .await
}

/// Turns daemon events into D-Bus signals and `PropertiesChanged`.
async fn signals(
    conn: &Connection,
    shared: &Arc<Shared>,
    high_water_percent: u8,
    stop: &CancellationToken,
) -> zbus::Result<()> {
    let server = conn.object_server();
    let gw = server.interface::<_, Gateway>(OBJECT_PATH).await?;
    let apps_iface = server.interface::<_, AppsIface>(OBJECT_PATH).await?;
    let em = gw.signal_emitter().clone();
    let apps_em = apps_iface.signal_emitter().clone();

    let mut devices = shared.io.devices.events();
    let mut app_events = shared.io.apps.as_ref().map(|a| a.handle.events());
    let mut uplink = shared.io.uplink.clone();
    let mut was_connected = uplink.borrow().connected;
    let mut stats = shared.io.buffer.watch_stats();
    let mut pending = shared.pending_restart();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_adapters = adapters(shared);
    let mut high = false;

    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            ev = devices.recv() => match ev {
                Ok(DeviceEvent::FirstSeen { id, transport, source }) => {
                    Gateway::device_first_seen(&em, &id, &transport, &source).await?
                }
                Ok(DeviceEvent::Lost { id, last_seen_ms }) => {
                    Gateway::device_lost(&em, &id, last_seen_ms).await?
                }
                Ok(DeviceEvent::Returned { id, lost_for_ms }) => {
                    Gateway::device_returned(&em, &id, lost_for_ms).await?
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "D-Bus: device events were lost (too many at once)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    devices = shared.io.devices.events();
                }
            },
            ev = async {
                match app_events.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match ev {
                Ok(ev) => {
                    let (n, v) = (ev.app.as_str(), ev.version.as_str());
                    match ev.kind {
                        AppEventKind::Deployed { .. } => AppsIface::app_deployed(&apps_em, n, v, "").await?,
                        AppEventKind::Upgraded { ref from, .. } => AppsIface::app_deployed(&apps_em, n, v, from).await?,
                        AppEventKind::Removed => AppsIface::app_removed(&apps_em, n, v).await?,
                        AppEventKind::Failed { ref fault, ref reason } => AppsIface::app_crashed(&apps_em, n, v, fault, reason).await?,
                        AppEventKind::Disabled { for_ms, ref reason } => AppsIface::app_disabled(&apps_em, n, v, for_ms, reason).await?,
                        AppEventKind::Enabled => AppsIface::app_enabled(&apps_em, n, v).await?,
                        AppEventKind::Refused { ref file, ref reason } => AppsIface::app_refused(&apps_em, n, file, reason).await?,
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "D-Bus: app events were lost (too many at once)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => app_events = None,
            },
            r = uplink.changed() => {
                if r.is_err() {
                    // The uplink is gone (shutting down).
                    stop.cancelled().await;
                    return Ok(());
                }
                let s = uplink.borrow_and_update().clone();
                if s.connected != was_connected {
                    was_connected = s.connected;
                    if s.connected {
                        Gateway::uplink_connected_signal(&em, &s.broker).await?;
                    } else {
                        let reason = s.last_error.clone().unwrap_or_default();
                        Gateway::uplink_disconnected(&em, &s.broker, &reason).await?;
                    }
                    let g = gw.get().await;
                    g.uplink_connected_changed(&em).await?;
                    g.uplink_last_error_changed(&em).await?;
                }
            },
            r = stats.changed() => {
                if r.is_err() {
                    stop.cancelled().await;
                    return Ok(());
                }
                let s = *stats.borrow_and_update();
                if let Some(pct) = s.bytes.saturating_mul(100).checked_div(s.max_bytes) {
                    if !high && pct >= u64::from(high_water_percent) {
                        high = true;
                        warn!(bytes = s.bytes, max_bytes = s.max_bytes, "buffer above its high-water mark");
                        Gateway::buffer_high_water(&em, s.bytes, s.max_bytes).await?;
                    } else if high && pct + 10 < u64::from(high_water_percent) {
                        high = false;
                    }
                }
            },
            r = pending.changed() => {
                if r.is_ok() {
                    gw.get().await.pending_restart_changed(&em).await?;
                }
            },
            _ = tick.tick() => {
                let now = adapters(shared);
                if now != last_adapters {
                    last_adapters = now;
                    gw.get().await.adapters_changed(&em).await?;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbus_values_become_toml() {
        assert_eq!(
            value_to_toml(&Value::from(5u32), "k").unwrap().as_integer(),
            Some(5)
        );
        assert_eq!(
            value_to_toml(&Value::from("x"), "k").unwrap().as_str(),
            Some("x")
        );
        assert_eq!(
            value_to_toml(&Value::from(true), "k").unwrap().as_bool(),
            Some(true)
        );
        let nested = Value::Value(Box::new(Value::from(2.5f64)));
        assert_eq!(value_to_toml(&nested, "k").unwrap().as_float(), Some(2.5));
        let arr = Value::from(vec![Value::from(1i64), Value::from("a")]);
        assert_eq!(
            value_to_toml(&arr, "k").unwrap().as_array().unwrap().len(),
            2
        );
        let dict: HashMap<String, Value> = HashMap::from([("bind".into(), Value::from("x:1"))]);
        let t = value_to_toml(&Value::from(dict), "k").unwrap();
        assert_eq!(
            t.as_inline_table().unwrap().get("bind").unwrap().as_str(),
            Some("x:1")
        );
        let e = value_to_toml(&Value::from(u64::MAX), "buffer.max_bytes").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidValue);
        assert!(e.message.starts_with("buffer.max_bytes"));
    }

    #[test]
    fn json_becomes_typed_dbus_values() {
        let j = serde_json::json!({"a": 1, "b": "s", "c": [true], "d": 1.5, "e": null});
        let v = json_to_value(&j);
        assert_eq!(v.value_signature().to_string(), "a{sv}");
        let Value::Dict(d) = v else { panic!() };
        assert_eq!(d.iter().count(), 4, "null (unset) left out");
        assert_eq!(
            json_to_value(&serde_json::json!(7))
                .value_signature()
                .to_string(),
            "x"
        );
        assert_eq!(
            json_to_value(&serde_json::json!([1]))
                .value_signature()
                .to_string(),
            "av"
        );
    }

    #[test]
    fn error_names_are_the_documented_ones() {
        use zbus::DBusError;
        let e: Error = EditError::UnknownKey("x: unknown".into()).into();
        assert_eq!(e.name().as_str(), "io.gatewayd.Error.UnknownKey");
        let e = Error::new(ErrorKind::AccessDenied, "no");
        assert_eq!(e.name().as_str(), "org.freedesktop.DBus.Error.AccessDenied");
        let e: Error = EdgeError::NotDeployed("a".into()).into();
        assert_eq!(e.kind, ErrorKind::NotFound);
    }
}
