//! The command requests a serial source takes (`SourceCommand::request`).
//!
//! ```json
//! {"command": "set_sample_interval", "device": "<device id or port name>", "ms": 500}
//! {"command": "identify", "device": "…", "seconds": 5}
//! {"command": "reboot", "device": "…"}
//! {"command": "request_diagnostics", "device": "…"}
//! {"command": "list"}
//! ```

use gatewayd_core::CommandError;
use gatewayd_sensor_proto::msg::{
    Command, MAX_IDENTIFY_S, MAX_SAMPLE_INTERVAL_MS, MIN_SAMPLE_INTERVAL_MS,
};
use serde_json::Value;

use crate::session::validate_command;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The ports and their devices (the status's `ports` array).
    List,
    /// A command for the device named `device` (device id, with or without
    /// `serial:`, or port name).
    Device { device: String, command: Command },
}

fn invalid(msg: impl Into<String>) -> CommandError {
    CommandError::InvalidArgument(msg.into())
}

/// Parses and validates a request (arguments are checked as the device
/// would, so an out-of-range one never reaches the wire).
pub fn parse_request(v: &Value) -> Result<Request, CommandError> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("the request must be a JSON object with a \"command\""))?;
    let name = obj
        .get("command")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("command: required (a string)"))?;
    if name == "list" {
        return Ok(Request::List);
    }
    let interval_range =
        || format!("ms: must be {MIN_SAMPLE_INTERVAL_MS}..={MAX_SAMPLE_INTERVAL_MS}");
    let command = match name {
        "set_sample_interval" => {
            let ms = obj
                .get("ms")
                .ok_or_else(|| invalid("ms: required (the new sample interval)"))?
                .as_u64()
                .and_then(|ms| u32::try_from(ms).ok())
                .ok_or_else(|| invalid(interval_range()))?;
            Command::SetSampleInterval { ms }
        }
        "identify" => {
            let seconds = match obj.get("seconds") {
                None => 5,
                Some(s) => s
                    .as_u64()
                    .and_then(|s| u8::try_from(s).ok())
                    .ok_or_else(|| invalid(format!("seconds: must be 0..={MAX_IDENTIFY_S}")))?,
            };
            Command::Identify { seconds }
        }
        "reboot" => Command::Reboot,
        "request_diagnostics" => Command::RequestDiagnostics,
        other => {
            return Err(invalid(format!(
                "command: unknown {other:?} (expected set_sample_interval, identify, reboot, request_diagnostics or list)"
            )))
        }
    };
    validate_command(&command)?;
    let device = obj
        .get("device")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| invalid("device: required (a device id or a port name)"))?;
    Ok(Request::Device {
        device: device.to_owned(),
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse_request(&json!({"command": "list"})),
            Ok(Request::List)
        );
        assert_eq!(
            parse_request(&json!({"command": "set_sample_interval", "device": "a", "ms": 500})),
            Ok(Request::Device {
                device: "a".into(),
                command: Command::SetSampleInterval { ms: 500 }
            })
        );
        assert_eq!(
            parse_request(&json!({"command": "identify", "device": "serial:x", "seconds": 3})),
            Ok(Request::Device {
                device: "serial:x".into(),
                command: Command::Identify { seconds: 3 }
            })
        );
        assert_eq!(
            parse_request(&json!({"command": "reboot", "device": "p"})),
            Ok(Request::Device {
                device: "p".into(),
                command: Command::Reboot
            })
        );
        assert_eq!(
            parse_request(&json!({"command": "request_diagnostics", "device": "p"})),
            Ok(Request::Device {
                device: "p".into(),
                command: Command::RequestDiagnostics
            })
        );
    }

    #[test]
    fn bad_requests_name_the_argument() {
        let err = |v: Value| match parse_request(&v) {
            Err(CommandError::InvalidArgument(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(json!({"command": "set_sample_interval", "device": "a", "ms": 5})),
            "ms: must be 100..=3600000"
        );
        assert_eq!(
            err(json!({"command": "set_sample_interval", "device": "a", "ms": -1})),
            "ms: must be 100..=3600000"
        );
        assert_eq!(
            err(json!({"command": "set_sample_interval", "device": "a", "ms": 1u64 << 40})),
            "ms: must be 100..=3600000"
        );
        assert!(err(json!({"command": "set_sample_interval", "device": "a"})).starts_with("ms:"));
        assert_eq!(
            err(json!({"command": "identify", "device": "a", "seconds": 61})),
            "seconds: must be 0..=60"
        );
        assert!(err(json!({"command": "reboot"})).starts_with("device:"));
        assert!(err(json!({"command": "dance", "device": "a"})).starts_with("command:"));
        assert!(err(json!([1])).contains("object"));
    }
}
