//! gatewayctl's errors and their exit statuses.
//!
//! D-Bus errors are told apart by their *name*, never by their text.

use std::process::ExitCode;
use std::time::Duration;

/// The exit statuses (see `EXIT_CODES` in `cli.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    Other = 1,
    Usage = 2,
    Unreachable = 3,
    AccessDenied = 4,
    InvalidInput = 5,
    NotFound = 6,
    Incomplete = 7,
    DeviceRefused = 8,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

pub const GATEWAYD_ERROR_PREFIX: &str = "io.gatewayd.Error.";

/// What went wrong, as far as the exit status is concerned.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Cannot connect to (or authenticate with) the bus.
    #[error("cannot connect to the {bus}: {detail}")]
    Connect { bus: String, detail: String },

    /// The bus address is malformed.
    #[error("invalid D-Bus address `{address}`: {detail}")]
    BadAddress { address: String, detail: String },

    /// No answer in time.
    #[error("gatewayd did not answer {what} within {secs} s (is it running? see --timeout)", secs = .after.as_secs())]
    Timeout { what: String, after: Duration },

    /// A D-Bus error reply (or a local zbus failure that carries a name).
    #[error("{}", describe_remote(.name, .message, .bus))]
    Remote {
        name: String,
        message: String,
        bus: String,
    },

    /// The connection failed during a call.
    #[error("lost the connection to the {bus}: {detail}")]
    Io { bus: String, detail: String },

    /// Bad local input: an unreadable file, a malformed value.
    #[error("{0}")]
    Input(String),

    /// Something local to look up is not there (e.g. no lorawan source
    /// runs).
    #[error("{0}")]
    NotFound(String),

    /// `buffer flush` returned with readings remaining.
    #[error("{remaining} reading(s) still unacknowledged when the flush timed out")]
    Incomplete { remaining: u64 },

    /// gatewayd answered something this version does not understand.
    #[error("unexpected reply from gatewayd: {0}")]
    Protocol(String),
}

impl CtlError {
    /// Wraps a zbus error from a call to gatewayd.
    pub fn from_zbus(err: zbus::Error, bus: &str) -> CtlError {
        if let Some((name, message)) = error_name(&err) {
            return CtlError::Remote {
                name,
                message,
                bus: bus.to_string(),
            };
        }
        match err {
            zbus::Error::InputOutput(e) => CtlError::Io {
                bus: bus.to_string(),
                detail: e.to_string(),
            },
            zbus::Error::Variant(e) => CtlError::Protocol(e.to_string()),
            zbus::Error::InvalidReply | zbus::Error::InvalidField | zbus::Error::MissingField => {
                CtlError::Protocol(err.to_string())
            }
            other => CtlError::Protocol(other.to_string()),
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            CtlError::Connect { .. } | CtlError::Timeout { .. } | CtlError::Io { .. } => {
                Exit::Unreachable
            }
            CtlError::BadAddress { .. } => Exit::Usage,
            CtlError::Remote { name, .. } => exit_for_error_name(name),
            CtlError::Input(_) => Exit::InvalidInput,
            CtlError::NotFound(_) => Exit::NotFound,
            CtlError::Incomplete { .. } => Exit::Incomplete,
            CtlError::Protocol(_) => Exit::Other,
        }
    }
}

/// The D-Bus error name and text of a zbus error that carries one.
pub fn error_name(err: &zbus::Error) -> Option<(String, String)> {
    match err {
        zbus::Error::MethodError(name, message, _) => Some((
            name.as_str().to_string(),
            message.clone().unwrap_or_default(),
        )),
        zbus::Error::FDO(fdo) => Some(fdo_name(fdo)),
        _ => None,
    }
}

fn fdo_name(err: &zbus::fdo::Error) -> (String, String) {
    use zbus::DBusError as _;
    let name = err.name().as_str().to_string();
    let message = err.description().unwrap_or_default().to_string();
    (name, message)
}

/// The exit status for a D-Bus error name.
pub fn exit_for_error_name(name: &str) -> Exit {
    match name {
        "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner"
        | "org.freedesktop.DBus.Error.NoReply"
        | "org.freedesktop.DBus.Error.Timeout"
        | "org.freedesktop.DBus.Error.TimedOut"
        | "org.freedesktop.DBus.Error.Disconnected"
        | "org.freedesktop.DBus.Error.NoServer" => Exit::Unreachable,
        "org.freedesktop.DBus.Error.AccessDenied" | "org.freedesktop.DBus.Error.AuthFailed" => {
            Exit::AccessDenied
        }
        _ => match name.strip_prefix(GATEWAYD_ERROR_PREFIX) {
            Some(
                "UnknownKey" | "InvalidValue" | "AppRefused" | "AlreadyExists" | "NotPersistent",
            ) => Exit::InvalidInput,
            Some("NotFound") => Exit::NotFound,
            Some("NotSupported") => Exit::InvalidInput,
            Some("Refused" | "Timeout") => Exit::DeviceRefused,
            _ => Exit::Other,
        },
    }
}

fn describe_remote(name: &str, message: &str, bus: &str) -> String {
    let short = name.rsplit('.').next().unwrap_or(name);
    let text = if message.is_empty() { short } else { message };
    match exit_for_error_name(name) {
        Exit::Unreachable if short == "ServiceUnknown" || short == "NameHasNoOwner" => format!(
            "gatewayd is not running: io.gatewayd.Gateway1 is not on the {bus} ({text})"
        ),
        Exit::Unreachable => format!("gatewayd did not answer: {text} ({name})"),
        Exit::AccessDenied => format!(
            "access denied: {text} (writes need root, the gatewayd user or membership of gatewayd's write group)"
        ),
        _ if name.starts_with(GATEWAYD_ERROR_PREFIX) => format!("{text} ({short})"),
        _ => format!("{text} ({name})"),
    }
}

/// The exit status for an error: the first gatewayctl or zbus error in its
/// chain decides; anything else is 1.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CtlError>() {
            return e.exit();
        }
        if let Some(e) = cause.downcast_ref::<zbus::Error>() {
            return match error_name(e) {
                Some((name, _)) => exit_for_error_name(&name),
                None => match e {
                    zbus::Error::InputOutput(_) | zbus::Error::Handshake(_) => Exit::Unreachable,
                    zbus::Error::Address(_) => Exit::Usage,
                    _ => Exit::Other,
                },
            };
        }
        if let Some(e) = cause.downcast_ref::<zbus::fdo::Error>() {
            return exit_for_error_name(&fdo_name(e).0);
        }
        if cause.is::<crate::convert::ValueError>() {
            return Exit::InvalidInput;
        }
    }
    Exit::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::names::OwnedErrorName;

    fn method_error(name: &str, text: &str) -> zbus::Error {
        let msg = zbus::Message::method_call("/io/gatewayd/Gateway1", "SetConfig")
            .expect("builder")
            .build(&())
            .expect("message");
        let name = OwnedErrorName::try_from(name.to_string()).expect("error name");
        zbus::Error::MethodError(name, Some(text.to_string()), msg)
    }

    fn exit_of(err: zbus::Error) -> Exit {
        CtlError::from_zbus(err, "system bus").exit()
    }

    #[test]
    fn access_denied_maps_to_exit_4() {
        let err = method_error("org.freedesktop.DBus.Error.AccessDenied", "not allowed");
        assert_eq!(exit_of(err), Exit::AccessDenied);
        let fdo = zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied("nope".into())));
        assert_eq!(exit_of(fdo), Exit::AccessDenied);
        let raw = anyhow::Error::new(zbus::fdo::Error::AccessDenied("nope".into()));
        assert_eq!(exit_for(&raw), Exit::AccessDenied);
    }

    #[test]
    fn service_unknown_no_reply_and_timeouts_map_to_exit_3() {
        for name in [
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner",
            "org.freedesktop.DBus.Error.NoReply",
            "org.freedesktop.DBus.Error.Timeout",
        ] {
            assert_eq!(
                exit_of(method_error(name, "x")),
                Exit::Unreachable,
                "{name}"
            );
        }
        let fdo = zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown("gone".into())));
        assert_eq!(exit_of(fdo), Exit::Unreachable);
        let timeout = CtlError::Timeout {
            what: "GetAll".into(),
            after: Duration::from_secs(3),
        };
        assert_eq!(timeout.exit(), Exit::Unreachable);
        let io = zbus::Error::InputOutput(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        assert_eq!(exit_of(io), Exit::Unreachable);
    }

    #[test]
    fn input_errors_map_to_exit_5() {
        for short in [
            "UnknownKey",
            "InvalidValue",
            "AppRefused",
            "AlreadyExists",
            "NotPersistent",
            "NotSupported",
        ] {
            let name = format!("io.gatewayd.Error.{short}");
            assert_eq!(
                exit_of(method_error(&name, "x")),
                Exit::InvalidInput,
                "{name}"
            );
        }
        assert_eq!(CtlError::Input("bad".into()).exit(), Exit::InvalidInput);
        let value_err = anyhow::Error::new(crate::convert::ValueError("bad".into()));
        assert_eq!(exit_for(&value_err), Exit::InvalidInput);
    }

    #[test]
    fn not_found_maps_to_exit_6_and_others_to_1() {
        assert_eq!(
            exit_of(method_error("io.gatewayd.Error.NotFound", "no app x")),
            Exit::NotFound
        );
        for name in [
            "io.gatewayd.Error.Unavailable",
            "io.gatewayd.Error.Failed",
            "io.gatewayd.Error.SomethingNew",
            "org.freedesktop.DBus.Error.UnknownMethod",
        ] {
            assert_eq!(exit_of(method_error(name, "x")), Exit::Other, "{name}");
        }
        assert_eq!(
            CtlError::Incomplete { remaining: 3 }.exit(),
            Exit::Incomplete
        );
        assert_eq!(exit_for(&anyhow::anyhow!("whatever")), Exit::Other);
    }

    #[test]
    fn a_device_refusing_or_not_answering_maps_to_exit_8() {
        for name in ["io.gatewayd.Error.Refused", "io.gatewayd.Error.Timeout"] {
            assert_eq!(
                exit_of(method_error(name, "x")),
                Exit::DeviceRefused,
                "{name}"
            );
        }
    }

    #[test]
    fn exit_status_is_found_through_context() {
        let err = anyhow::Error::new(CtlError::from_zbus(
            method_error("io.gatewayd.Error.NotFound", "no such app: foo"),
            "system bus",
        ))
        .context("removing app foo");
        assert_eq!(exit_for(&err), Exit::NotFound);
    }

    #[test]
    fn messages_carry_the_dbus_text_not_just_the_name() {
        let err = CtlError::from_zbus(
            method_error(
                "io.gatewayd.Error.InvalidValue",
                "buffer.max_bytes: must be at least 65536",
            ),
            "system bus",
        );
        assert_eq!(
            err.to_string(),
            "buffer.max_bytes: must be at least 65536 (InvalidValue)"
        );
        let err = CtlError::from_zbus(
            method_error("org.freedesktop.DBus.Error.ServiceUnknown", "not provided"),
            "session bus",
        );
        let text = err.to_string();
        assert!(
            text.contains("not running") && text.contains("session bus"),
            "{text}"
        );
        let err = CtlError::from_zbus(
            method_error(
                "org.freedesktop.DBus.Error.AccessDenied",
                "uid 1000 may not write",
            ),
            "system bus",
        );
        assert!(err.to_string().contains("uid 1000 may not write"));
    }
}
