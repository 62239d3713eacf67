//! The app manifest (`manifest.toml`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{toml_error, ArtifactError};
use gatewayd_model::glob_match;

/// The only manifest schema this crate reads.
pub const SCHEMA: u32 = 1;

const NAME_RULE: &str = "^[a-z0-9][a-z0-9-]{0,62}$";
const MAX_FILE_NAME: usize = 128;

/// An edge app's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest schema; must be 1.
    pub schema: u32,
    /// Apps run in ascending `(order, name)`.
    #[serde(default)]
    pub order: i32,
    /// What the gateway does with readings when the app fails.
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// Name, version and module of the app.
    pub app: AppInfo,
    /// Which readings the app receives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub select: Vec<Selector>,
    /// How readings are delivered.
    #[serde(default)]
    pub delivery: Delivery,
    /// Resource limits the app asks for (the gateway caps them).
    #[serde(default)]
    pub limits: Limits,
    /// ONNX models shipped in the bundle.
    #[serde(default, rename = "model", skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelRef>,
    /// Free-form configuration handed to the app's `init()` as JSON.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub config: toml::Table,
}

/// `[app]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppInfo {
    /// `^[a-z0-9][a-z0-9-]{0,62}$`.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// File name of the WebAssembly component inside the bundle.
    pub module: String,
    /// Lowercase hex sha256 of the module; written by `pack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_sha256: Option<String>,
}

/// `[[select]]`: a device glob and measurement names (globs too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Glob over device ids (`*`, `?`); default `*`.
    #[serde(default = "star")]
    pub device: String,
    /// Measurement names (globs); empty = any.
    #[serde(default)]
    pub measurements: Vec<String>,
    /// Glob over the reading's device profile (`meta.extra.profile`, set by
    /// the LoRaWAN source from the device's registry profile); absent =
    /// any reading, with or without a profile. This is how a device profile
    /// names its codec app: register the device with `profile =
    /// "lora-codec"` and select `profile = "lora-codec"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

fn star() -> String {
    "*".to_owned()
}

impl Default for Selector {
    fn default() -> Self {
        Selector {
            device: star(),
            measurements: Vec::new(),
            profile: None,
        }
    }
}

impl Selector {
    /// Whether the device id matches this selector's `device` glob.
    pub fn matches_device(&self, device: &str) -> bool {
        glob_match(&self.device, device)
    }

    /// Whether a reading's profile (`meta.extra.profile`) matches: always
    /// when the selector names none; never for a reading without one when
    /// it does.
    pub fn matches_profile(&self, profile: Option<&str>) -> bool {
        match (&self.profile, profile) {
            (None, _) => true,
            (Some(glob), Some(p)) => glob_match(glob, p),
            (Some(_), None) => false,
        }
    }

    /// Whether a measurement name matches (any name if `measurements` is empty).
    pub fn matches_measurement(&self, name: &str) -> bool {
        self.measurements.is_empty() || self.measurements.iter().any(|m| glob_match(m, name))
    }
}

/// `on_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Readings pass on unchanged when the app fails.
    #[default]
    Pass,
    /// Readings are held back when the app fails.
    Hold,
}

/// `delivery.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Each reading as it arrives.
    #[default]
    Stream,
    /// Readings collected into windows.
    Window,
}

/// `[delivery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Stream or window.
    pub mode: DeliveryMode,
    /// Window mode: close the window after this many seconds (0 = no time bound).
    pub window_seconds: u32,
    /// Window mode: close after this many readings (0 = no count bound).
    pub window_readings: u32,
    /// Window mode: whether windowed readings also continue to the buffer.
    pub keep_originals: bool,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            mode: DeliveryMode::Stream,
            window_seconds: 0,
            window_readings: 0,
            keep_originals: true,
        }
    }
}

/// `[limits]`: `None` = the gateway's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wasm fuel per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_per_call: Option<u64>,
    /// Wall-clock time per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms_per_call: Option<u64>,
    /// Linear memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Readings one call may emit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_readings: Option<u32>,
    /// Size of the app's key-value store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_max_bytes: Option<u64>,
}

/// `[[model]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// Same rule as `app.name`.
    pub name: String,
    /// File name inside the bundle.
    pub file: String,
    /// Lowercase hex sha256; written by `pack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Manifest {
    /// Parse and validate `manifest.toml`. Errors name the offending key.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ArtifactError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ArtifactError::Manifest(format!("not UTF-8 text ({e})")))?;
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ArtifactError::Manifest(toml_error(text, &e)))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Check every rule `parse` checks (for manifests built in code).
    pub fn validate(&self) -> Result<(), ArtifactError> {
        self.check().map_err(ArtifactError::Manifest)
    }

    fn check(&self) -> Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!(
                "schema = {} is not supported (this version reads schema {SCHEMA})",
                self.schema
            ));
        }
        check_name("app.name", &self.app.name)?;
        if let Err(e) = semver::Version::parse(&self.app.version) {
            return Err(format!(
                "app.version {:?} is not a semantic version like 1.2.3 ({e})",
                self.app.version
            ));
        }
        check_file_name("app.module", &self.app.module)?;
        if let Some(d) = &self.app.module_sha256 {
            check_digest("app.module_sha256", d)?;
        }
        for (i, s) in self.select.iter().enumerate() {
            if s.device.is_empty() {
                return Err(format!(
                    "select[{i}].device is empty (use \"*\" for any device)"
                ));
            }
            if s.measurements.iter().any(String::is_empty) {
                return Err(format!("select[{i}].measurements holds an empty name"));
            }
        }
        if self.delivery.mode == DeliveryMode::Window
            && self.delivery.window_seconds == 0
            && self.delivery.window_readings == 0
        {
            return Err(
                "delivery.mode = \"window\" needs delivery.window_seconds > 0 \
                        or delivery.window_readings > 0"
                    .to_owned(),
            );
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.fuel_per_call", l.fuel_per_call),
            ("limits.time_ms_per_call", l.time_ms_per_call),
            ("limits.memory_bytes", l.memory_bytes),
            (
                "limits.max_output_readings",
                l.max_output_readings.map(u64::from),
            ),
            ("limits.kv_max_bytes", l.kv_max_bytes),
        ] {
            if value == Some(0) {
                return Err(format!(
                    "{key} = 0 is not allowed (leave it out for the gateway default)"
                ));
            }
        }
        let mut names = BTreeSet::new();
        let mut files = BTreeSet::from([self.app.module.as_str()]);
        for (i, m) in self.models.iter().enumerate() {
            check_name(&format!("model[{i}].name"), &m.name)?;
            check_file_name(&format!("model[{i}].file"), &m.file)?;
            if let Some(d) = &m.sha256 {
                check_digest(&format!("model[{i}].sha256"), d)?;
            }
            if !names.insert(m.name.as_str()) {
                return Err(format!("model[{i}].name {:?} is used twice", m.name));
            }
            if !files.insert(m.file.as_str()) {
                return Err(format!(
                    "model[{i}].file {:?} is already used by app.module or another model",
                    m.file
                ));
            }
        }
        Ok(())
    }

    /// The `[config]` table as a JSON object (datetimes become strings,
    /// non-finite floats become null).
    pub fn config_json(&self) -> String {
        let object: serde_json::Map<String, serde_json::Value> = self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), toml_to_json(v)))
            .collect();
        serde_json::Value::Object(object).to_string()
    }

    /// The files the manifest names: the module, then each model's file.
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.app.module.as_str()).chain(self.models.iter().map(|m| m.file.as_str()))
    }
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// Whether `s` matches `^[a-z0-9][a-z0-9-]{0,62}$`.
pub(crate) fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

fn check_name(key: &str, value: &str) -> Result<(), String> {
    if is_valid_name(value) {
        Ok(())
    } else {
        Err(format!("{key} {value:?} must match {NAME_RULE}"))
    }
}

/// Whether `s` is acceptable as the name of a file inside a bundle: a plain
/// name, no directories, no `..`, at most 128 bytes, no control characters.
pub(crate) fn file_name_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("is empty")
    } else if s.len() > MAX_FILE_NAME {
        Some("is longer than 128 bytes")
    } else if s.contains('/') || s.contains('\\') {
        Some("must be a plain file name without '/' or '\\'")
    } else if s.contains("..") || s == "." {
        Some("must not contain '..' or be '.'")
    } else if s.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    }
}

fn check_file_name(key: &str, value: &str) -> Result<(), String> {
    if let Some(problem) = file_name_problem(value) {
        return Err(format!("{key} {value:?} {problem}"));
    }
    if value == crate::MANIFEST_FILE || value == crate::SIGNATURES_FILE {
        return Err(format!("{key} {value:?} is reserved for the bundle itself"));
    }
    Ok(())
}

fn check_digest(key: &str, value: &str) -> Result<(), String> {
    if value.len() == 64
        && value
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        Ok(())
    } else {
        Err(format!(
            "{key} {value:?} must be 64 lowercase hexadecimal digits (sha256)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
schema = 1
order = 5
on_failure = "hold"

[app]
name = "threshold-alert"
version = "1.0.0-rc.1+build.5"
description = "alerts above a threshold"
module = "app.wasm"

[[select]]
device = "coap:*"
measurements = ["temperature", "hum*"]

[[select]]

[delivery]
mode = "window"
window_seconds = 60
keep_originals = false

[limits]
fuel_per_call = 100000000
time_ms_per_call = 100
memory_bytes = 16777216
max_output_readings = 1000
kv_max_bytes = 1048576

[[model]]
name = "vibration-ae"
file = "model.onnx"

[config]
threshold = 30.5
label = "hot"
nested = { a = [1, 2], b = true }
"#;

    const MINIMAL: &str = r#"
schema = 1
[app]
name = "a"
version = "0.1.0"
module = "app.wasm"
"#;

    fn err(text: &str) -> String {
        match Manifest::parse(text.as_bytes()) {
            Ok(m) => panic!("accepted: {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn full_manifest_parses() {
        let m = Manifest::parse(FULL.as_bytes()).unwrap();
        assert_eq!(m.order, 5);
        assert_eq!(m.on_failure, FailurePolicy::Hold);
        assert_eq!(m.app.name, "threshold-alert");
        assert_eq!(m.select.len(), 2);
        assert_eq!(m.select[1], Selector::default());
        assert!(m.select[0].matches_device("coap:s1"));
        assert!(!m.select[0].matches_device("lora:s1"));
        assert!(m.select[0].matches_measurement("humidity"));
        assert!(!m.select[0].matches_measurement("pressure"));
        assert!(m.select[1].matches_measurement("pressure"));
        assert!(m.select[0].matches_profile(None), "no profile named: any");
        let by_profile = Selector {
            profile: Some("lora-*".into()),
            ..Selector::default()
        };
        assert!(by_profile.matches_profile(Some("lora-codec")));
        assert!(!by_profile.matches_profile(Some("cayenne")));
        assert!(!by_profile.matches_profile(None));
        assert_eq!(m.delivery.mode, DeliveryMode::Window);
        assert_eq!(m.delivery.window_seconds, 60);
        assert_eq!(m.delivery.window_readings, 0);
        assert!(!m.delivery.keep_originals);
        assert_eq!(m.limits.max_output_readings, Some(1000));
        assert_eq!(m.models.len(), 1);
        let json: serde_json::Value = serde_json::from_str(&m.config_json()).unwrap();
        assert_eq!(json["threshold"], 30.5);
        assert_eq!(json["label"], "hot");
        assert_eq!(json["nested"]["a"][1], 2);
        assert_eq!(json["nested"]["b"], true);
    }

    #[test]
    fn defaults() {
        let m = Manifest::parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(m.order, 0);
        assert_eq!(m.on_failure, FailurePolicy::Pass);
        assert!(m.select.is_empty());
        assert_eq!(m.delivery, Delivery::default());
        assert!(m.delivery.keep_originals);
        assert_eq!(m.limits, Limits::default());
        assert!(m.models.is_empty());
        assert_eq!(m.config_json(), "{}");
    }

    #[test]
    fn serialisation_roundtrips() {
        for text in [FULL, MINIMAL] {
            let m = Manifest::parse(text.as_bytes()).unwrap();
            let out = toml::to_string_pretty(&m).unwrap();
            let back = Manifest::parse(out.as_bytes()).unwrap();
            assert_eq!(m, back, "{out}");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(&MINIMAL.replace("module =", "modul = \"x\"\nmodule ="));
        assert!(e.contains("unknown field `modul`"), "{e}");
        let e = err(&format!("{MINIMAL}\n[delivery]\nwindow_second = 3\n"));
        assert!(e.contains("window_second"), "{e}");
        assert!(e.contains("line "), "{e}");
        let e = err(&format!("{MINIMAL}\n[limitz]\n"));
        assert!(e.contains("limitz"), "{e}");
        let e = err(&MINIMAL.replace("schema = 1", "schema = 1\nordr = 3"));
        assert!(e.contains("ordr"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[model]]\nname = \"m\"\nfile = \"m.onnx\"\nsha = \"\"\n"
        ));
        assert!(e.contains("`sha`"), "{e}");
    }

    #[test]
    fn missing_required_keys() {
        let e = err(&MINIMAL.replace("name = \"a\"", ""));
        assert!(e.contains("name"), "{e}");
        let e = err(&MINIMAL.replace("schema = 1", ""));
        assert!(e.contains("schema"), "{e}");
        let e = err(&MINIMAL.replace("module = \"app.wasm\"", ""));
        assert!(e.contains("module"), "{e}");
    }

    #[test]
    fn schema_must_be_1() {
        let e = err(&MINIMAL.replace("schema = 1", "schema = 2"));
        assert!(e.contains("schema = 2"), "{e}");
    }

    #[test]
    fn app_name_rule() {
        let e = err(&MINIMAL.replace("name = \"a\"", "name = \"Bad Name\""));
        assert_eq!(
            e,
            "manifest: app.name \"Bad Name\" must match ^[a-z0-9][a-z0-9-]{0,62}$"
        );
        for bad in ["", "-a", "a_b", "A", &"a".repeat(64), "é"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        for good in ["a", "0", "a-b-1", "9-", &"a".repeat(63)] {
            assert!(is_valid_name(good), "{good}");
        }
    }

    #[test]
    fn version_rule() {
        let e = err(&MINIMAL.replace("0.1.0", "1.0"));
        assert!(e.contains("app.version \"1.0\""), "{e}");
        let e = err(&MINIMAL.replace("0.1.0", "v1.0.0"));
        assert!(e.contains("app.version"), "{e}");
    }

    #[test]
    fn file_name_rules() {
        for bad in [
            "",
            "../app.wasm",
            "dir/app.wasm",
            "a\\b",
            "..",
            ".",
            "a..b",
            "manifest.toml",
            "signatures.toml",
            "a\nb",
        ] {
            let e = err(&MINIMAL.replace("\"app.wasm\"", &format!("{bad:?}")));
            assert!(e.contains("app.module"), "{bad:?}: {e}");
        }
        let long = "a".repeat(129);
        let e = err(&MINIMAL.replace("app.wasm", &long));
        assert!(e.contains("128"), "{e}");
        Manifest::parse(MINIMAL.replace("app.wasm", &"a".repeat(128)).as_bytes()).unwrap();
    }

    #[test]
    fn digests_must_be_hex() {
        let e = err(&MINIMAL.replace(
            "module = \"app.wasm\"",
            "module = \"app.wasm\"\nmodule_sha256 = \"abc\"",
        ));
        assert!(e.contains("app.module_sha256"), "{e}");
        let upper = "A".repeat(64);
        let e = err(&MINIMAL.replace(
            "module = \"app.wasm\"",
            &format!("module = \"app.wasm\"\nmodule_sha256 = \"{upper}\""),
        ));
        assert!(e.contains("lowercase"), "{e}");
    }

    #[test]
    fn models_unique() {
        let two = format!(
            "{MINIMAL}\n[[model]]\nname = \"m\"\nfile = \"a.onnx\"\n[[model]]\nname = \"m\"\nfile = \"b.onnx\"\n"
        );
        let e = err(&two);
        assert!(e.contains("model[1].name \"m\" is used twice"), "{e}");
        let same_file = format!(
            "{MINIMAL}\n[[model]]\nname = \"m\"\nfile = \"a.onnx\"\n[[model]]\nname = \"n\"\nfile = \"a.onnx\"\n"
        );
        let e = err(&same_file);
        assert!(e.contains("model[1].file"), "{e}");
        let clash = format!("{MINIMAL}\n[[model]]\nname = \"m\"\nfile = \"app.wasm\"\n");
        let e = err(&clash);
        assert!(e.contains("model[0].file"), "{e}");
        let bad = format!("{MINIMAL}\n[[model]]\nname = \"M\"\nfile = \"a.onnx\"\n");
        let e = err(&bad);
        assert!(e.contains("model[0].name"), "{e}");
    }

    #[test]
    fn window_rule() {
        let e = err(&format!("{MINIMAL}\n[delivery]\nmode = \"window\"\n"));
        assert!(e.contains("window_seconds"), "{e}");
        Manifest::parse(
            format!("{MINIMAL}\n[delivery]\nmode = \"window\"\nwindow_readings = 10\n").as_bytes(),
        )
        .unwrap();
        let e = err(&format!("{MINIMAL}\n[delivery]\nmode = \"batch\"\n"));
        assert!(e.contains("batch"), "{e}");
    }

    #[test]
    fn enums_and_limits() {
        let e = err(&MINIMAL.replace("schema = 1", "schema = 1\non_failure = \"drop\""));
        assert!(e.contains("drop"), "{e}");
        let e = err(&format!("{MINIMAL}\n[limits]\nfuel_per_call = 0\n"));
        assert!(e.contains("limits.fuel_per_call"), "{e}");
        let e = err(&format!("{MINIMAL}\n[limits]\nmemory_bytes = -1\n"));
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn selector_rules() {
        let e = err(&format!("{MINIMAL}\n[[select]]\ndevice = \"\"\n"));
        assert!(e.contains("select[0].device"), "{e}");
        let e = err(&format!("{MINIMAL}\n[[select]]\nmeasurements = [\"\"]\n"));
        assert!(e.contains("select[0].measurements"), "{e}");
    }

    #[test]
    fn not_utf8() {
        let e = Manifest::parse(&[0xff, 0xfe]).unwrap_err().to_string();
        assert!(e.contains("UTF-8"), "{e}");
    }
}
