use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest device id accepted, in bytes (prefix included).
pub const MAX_DEVICE_ID_LEN: usize = 200;

/// The transport a device is reached over; the namespace of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Coap,
    Ble,
    Lora,
    Serial,
    Thread,
    Matter,
    /// Readings produced on the gateway itself (edge apps, local workloads).
    App,
}

impl Transport {
    pub const ALL: [Transport; 7] = [
        Transport::Coap,
        Transport::Ble,
        Transport::Lora,
        Transport::Serial,
        Transport::Thread,
        Transport::Matter,
        Transport::App,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            Transport::Coap => "coap",
            Transport::Ble => "ble",
            Transport::Lora => "lora",
            Transport::Serial => "serial",
            Transport::Thread => "thread",
            Transport::Matter => "matter",
            Transport::App => "app",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("device id is empty")]
    Empty,
    #[error("device id is longer than {MAX_DEVICE_ID_LEN} bytes")]
    TooLong,
    #[error("device id {0:?} has no transport prefix (expected one of coap:, ble:, lora:, serial:, thread:, matter:, app:)")]
    NoPrefix(String),
    #[error("device id {0:?} has unknown transport prefix")]
    UnknownTransport(String),
    #[error("device id {id:?} contains {ch:?}; allowed are A-Z a-z 0-9 and - : . / _")]
    BadChar { id: String, ch: char },
}

/// A device identity: `<transport>:<native id>`, e.g. `lora:70B3D57ED0000001`.
///
/// The native part uses the SenML name character set (RFC 8428 §4.5.1) so a
/// device id is always usable as a SenML base name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    full: String,
    transport: Transport,
}

pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_')
}

impl DeviceId {
    /// Builds `<transport>:<native>`, validating the native part.
    pub fn new(transport: Transport, native: &str) -> Result<Self, IdError> {
        let full = format!("{}:{}", transport.prefix(), native);
        Self::parse_inner(full)
    }

    /// Builds an id from an untrusted native part, replacing characters
    /// outside the allowed set with `_` and truncating to fit.
    pub fn sanitized(transport: Transport, native: &str) -> Self {
        let mut s: String = native
            .chars()
            .map(|c| if is_name_char(c) { c } else { '_' })
            .collect();
        let max = MAX_DEVICE_ID_LEN - transport.prefix().len() - 1;
        if s.len() > max {
            s.truncate(max);
        }
        if s.is_empty() {
            s.push('_');
        }
        DeviceId {
            full: format!("{}:{}", transport.prefix(), s),
            transport,
        }
    }

    fn parse_inner(full: String) -> Result<Self, IdError> {
        if full.is_empty() {
            return Err(IdError::Empty);
        }
        if full.len() > MAX_DEVICE_ID_LEN {
            return Err(IdError::TooLong);
        }
        let Some((prefix, native)) = full.split_once(':') else {
            return Err(IdError::NoPrefix(full));
        };
        let transport = Transport::ALL
            .into_iter()
            .find(|t| t.prefix() == prefix)
            .ok_or_else(|| IdError::UnknownTransport(full.clone()))?;
        if native.is_empty() {
            return Err(IdError::Empty);
        }
        if let Some(ch) = native.chars().find(|c| !is_name_char(*c)) {
            return Err(IdError::BadChar { id: full, ch });
        }
        Ok(DeviceId { full, transport })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The part after the transport prefix.
    pub fn native(&self) -> &str {
        &self.full[self.transport.prefix().len() + 1..]
    }
}

impl FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_inner(s.to_owned())
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::parse_inner(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaced_ids() {
        let id: DeviceId = "lora:70B3D57ED0000001".parse().unwrap();
        assert_eq!(id.transport(), Transport::Lora);
        assert_eq!(id.native(), "70B3D57ED0000001");
        assert_eq!(id.to_string(), "lora:70B3D57ED0000001");
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!("".parse::<DeviceId>(), Err(IdError::Empty));
        assert!(matches!(
            "sensor".parse::<DeviceId>(),
            Err(IdError::NoPrefix(_))
        ));
        assert!(matches!(
            "zigbee:1".parse::<DeviceId>(),
            Err(IdError::UnknownTransport(_))
        ));
        assert_eq!("coap:".parse::<DeviceId>(), Err(IdError::Empty));
        assert!(matches!(
            "coap:a b".parse::<DeviceId>(),
            Err(IdError::BadChar { ch: ' ', .. })
        ));
        let long = format!("coap:{}", "a".repeat(MAX_DEVICE_ID_LEN));
        assert_eq!(long.parse::<DeviceId>(), Err(IdError::TooLong));
    }

    #[test]
    fn sanitizes_untrusted_native_ids() {
        let id = DeviceId::sanitized(Transport::Coap, "[::1]:5683");
        assert_eq!(id.as_str(), "coap:_::1_:5683");
        assert_eq!(id.as_str().parse::<DeviceId>().unwrap(), id);
        let id = DeviceId::sanitized(Transport::Ble, "");
        assert_eq!(id.as_str(), "ble:_");
    }
}
