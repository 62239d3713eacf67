//! The connection to the bus and typed calls to gatewayd's interfaces
//! (docs/dbus.md).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use zbus::connection::Builder;
use zbus::zvariant::{DynamicDeserialize, DynamicType, OwnedValue, Value};
use zbus::{Connection, Message};

use crate::cli::BusArg;
use crate::error::CtlError;

pub const NAME: &str = "io.gatewayd.Gateway1";
pub const PATH: &str = "/io/gatewayd/Gateway1";
pub const IFACE: &str = "io.gatewayd.Gateway1";
pub const APPS: &str = "io.gatewayd.Gateway1.Apps";
pub const LORAWAN: &str = "io.gatewayd.Gateway1.LoRaWAN";
pub const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

pub const NOT_SET: &str = "io.gatewayd.Error.NotSet";

/// A record: one `a{sv}` dictionary.
pub type Record = HashMap<String, OwnedValue>;

/// What `Deploy` and `Upgrade` return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub name: String,
    pub version: String,
    pub previous_version: String,
}

pub struct Client {
    conn: Connection,
    timeout: Duration,
    bus: String,
}

/// Runs `fut`, giving up after `after`.
pub async fn with_timeout<T, F>(what: &str, after: Duration, fut: F) -> Result<T, CtlError>
where
    F: Future<Output = Result<T, CtlError>>,
{
    match tokio::time::timeout(after, fut).await {
        Ok(result) => result,
        Err(_) => Err(CtlError::Timeout {
            what: what.to_string(),
            after,
        }),
    }
}

impl Client {
    /// Connects to the bus (not to gatewayd: that it is there shows at the
    /// first call).
    pub async fn connect(bus: &BusArg, timeout: Duration) -> Result<Client, CtlError> {
        let bus_name = bus.to_string();
        let connect_err = |e: zbus::Error| CtlError::Connect {
            bus: bus_name.clone(),
            detail: strip_zbus_prefix(&e),
        };
        let builder = match bus {
            BusArg::System => Builder::system().map_err(connect_err)?,
            BusArg::Session => Builder::session().map_err(connect_err)?,
            BusArg::Address(addr) => {
                Builder::address(addr.as_str()).map_err(|e| CtlError::BadAddress {
                    address: addr.clone(),
                    detail: strip_zbus_prefix(&e),
                })?
            }
        };
        let connect = async {
            builder.build().await.map_err(|e| match e {
                zbus::Error::Address(detail) => CtlError::BadAddress {
                    address: bus_name.clone(),
                    detail,
                },
                e => CtlError::Connect {
                    bus: bus_name.clone(),
                    detail: strip_zbus_prefix(&e),
                },
            })
        };
        let conn = match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(CtlError::Connect {
                    bus: bus_name,
                    detail: format!("no answer within {} s", timeout.as_secs()),
                })
            }
        };
        Ok(Client {
            conn,
            timeout,
            bus: bus_name,
        })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn bus(&self) -> &str {
        &self.bus
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Calls `iface.method(body)` on gatewayd's object, within `timeout`.
    pub async fn call_with_timeout<B>(
        &self,
        iface: &str,
        method: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<Message, CtlError>
    where
        B: serde::ser::Serialize + DynamicType,
    {
        with_timeout(method, timeout, async {
            self.conn
                .call_method(Some(NAME), PATH, Some(iface), method, body)
                .await
                .map_err(|e| CtlError::from_zbus(e, &self.bus))
        })
        .await
    }

    async fn call<B>(&self, iface: &str, method: &str, body: &B) -> Result<Message, CtlError>
    where
        B: serde::ser::Serialize + DynamicType,
    {
        self.call_with_timeout(iface, method, body, self.timeout)
            .await
    }

    /// `org.freedesktop.DBus.Properties.GetAll("io.gatewayd.Gateway1")`.
    pub async fn properties(&self) -> Result<Record, CtlError> {
        let reply = self.call(PROPERTIES, "GetAll", &IFACE).await?;
        decode(&reply, "GetAll")
    }

    pub async fn list_devices(&self) -> Result<Vec<Record>, CtlError> {
        let reply = self.call(IFACE, "ListDevices", &()).await?;
        decode(&reply, "ListDevices")
    }

    /// `GetConfig(key)`; `None` when the key is not set (`NotSet`).
    pub async fn get_config(&self, key: &str) -> Result<Option<OwnedValue>, CtlError> {
        match self.call(IFACE, "GetConfig", &key).await {
            Ok(reply) => decode(&reply, "GetConfig").map(Some),
            Err(CtlError::Remote { name, .. }) if name == NOT_SET => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn set_config(&self, key: &str, value: &Value<'_>) -> Result<String, CtlError> {
        let reply = self.call(IFACE, "SetConfig", &(key, value)).await?;
        decode(&reply, "SetConfig")
    }

    pub async fn unset_config(&self, key: &str) -> Result<String, CtlError> {
        let reply = self.call(IFACE, "UnsetConfig", &key).await?;
        decode(&reply, "UnsetConfig")
    }

    /// `Reload()` → (applied, restart_required).
    pub async fn reload(&self) -> Result<(Vec<String>, Vec<String>), CtlError> {
        let reply = self.call(IFACE, "Reload", &()).await?;
        decode(&reply, "Reload")
    }

    /// `FlushBuffer(timeout_ms)` → (delivered, remaining). The call may take
    /// as long as the flush: `call_timeout` must exceed it.
    pub async fn flush_buffer(
        &self,
        timeout_ms: u32,
        call_timeout: Duration,
    ) -> Result<(u64, u64), CtlError> {
        let reply = self
            .call_with_timeout(IFACE, "FlushBuffer", &timeout_ms, call_timeout)
            .await?;
        decode(&reply, "FlushBuffer")
    }

    pub async fn list_apps(&self) -> Result<Vec<Record>, CtlError> {
        let reply = self.call(APPS, "List", &()).await?;
        decode(&reply, "List")
    }

    /// `Deploy(bundle)` or `Upgrade(bundle)`.
    pub async fn deploy(
        &self,
        method: &str,
        bundle: &[u8],
        call_timeout: Duration,
    ) -> Result<Deployed, CtlError> {
        let reply = self
            .call_with_timeout(APPS, method, &bundle, call_timeout)
            .await?;
        let (name, version, previous_version): (String, String, String) = decode(&reply, method)?;
        Ok(Deployed {
            name,
            version,
            previous_version,
        })
    }

    pub async fn remove_app(&self, name: &str) -> Result<(), CtlError> {
        self.call(APPS, "Remove", &name).await.map(drop)
    }

    pub async fn list_lorawan_devices(&self) -> Result<Vec<Record>, CtlError> {
        let reply = self.call(LORAWAN, "ListDevices", &()).await?;
        decode(&reply, "ListDevices")
    }

    pub async fn add_lorawan_device(
        &self,
        device: &HashMap<String, Value<'_>>,
    ) -> Result<(), CtlError> {
        self.call(LORAWAN, "AddDevice", device).await.map(drop)
    }

    pub async fn remove_lorawan_device(&self, dev_eui: &str) -> Result<(), CtlError> {
        self.call(LORAWAN, "RemoveDevice", &dev_eui).await.map(drop)
    }

    /// `EnqueueDownlink(dev_eui, fport, payload, confirmed)` → id.
    pub async fn enqueue_downlink(
        &self,
        dev_eui: &str,
        fport: u8,
        payload: &[u8],
        confirmed: bool,
    ) -> Result<u64, CtlError> {
        let reply = self
            .call(
                LORAWAN,
                "EnqueueDownlink",
                &(dev_eui, fport, payload, confirmed),
            )
            .await?;
        decode(&reply, "EnqueueDownlink")
    }

    /// `ListDownlinks(dev_eui)` (`""`: every device).
    pub async fn list_downlinks(&self, dev_eui: &str) -> Result<Vec<Record>, CtlError> {
        let reply = self.call(LORAWAN, "ListDownlinks", &dev_eui).await?;
        decode(&reply, "ListDownlinks")
    }

    /// `ClearDownlinks(dev_eui, id)` (`id` 0: all) → how many went.
    pub async fn clear_downlinks(&self, dev_eui: &str, id: u64) -> Result<u32, CtlError> {
        let reply = self.call(LORAWAN, "ClearDownlinks", &(dev_eui, id)).await?;
        decode(&reply, "ClearDownlinks")
    }

    /// `SourceStatus(name)`: the source's JSON status.
    pub async fn source_status(&self, name: &str) -> Result<String, CtlError> {
        let reply = self.call(IFACE, "SourceStatus", &name).await?;
        decode(&reply, "SourceStatus")
    }

    /// `SourceCommand(name, request)`: the source's JSON answer. Waits at
    /// least 35 s: gatewayd gives a source 30 s to answer.
    pub async fn source_command(&self, name: &str, request: &str) -> Result<String, CtlError> {
        let timeout = self.timeout.max(std::time::Duration::from_secs(35));
        let reply = self
            .call_with_timeout(IFACE, "SourceCommand", &(name, request), timeout)
            .await?;
        decode(&reply, "SourceCommand")
    }

    /// `org.freedesktop.DBus.NameHasOwner("io.gatewayd.Gateway1")`.
    pub async fn gatewayd_on_bus(&self) -> Result<bool, CtlError> {
        with_timeout("NameHasOwner", self.timeout, async {
            let reply = self
                .conn
                .call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus"),
                    "NameHasOwner",
                    &NAME,
                )
                .await
                .map_err(|e| CtlError::from_zbus(e, &self.bus))?;
            decode(&reply, "NameHasOwner")
        })
        .await
    }
}

/// Decodes a reply's body, checking its signature.
pub fn decode<T>(reply: &Message, method: &str) -> Result<T, CtlError>
where
    T: for<'d> DynamicDeserialize<'d>,
{
    let body = reply.body();
    body.deserialize::<T>().map_err(|e| {
        CtlError::Protocol(format!(
            "{method} returned `{}`: {}",
            body.signature(),
            strip_zbus_prefix(&e)
        ))
    })
}

fn strip_zbus_prefix(e: &zbus::Error) -> String {
    match e {
        zbus::Error::InputOutput(io) => io.to_string(),
        zbus::Error::Address(detail) => detail.clone(),
        other => other.to_string(),
    }
}
