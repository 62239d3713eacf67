//! Local input: secret keys from stdin or a file, app bundles, downlink
//! payloads.

use std::io::{BufRead, Read};
use std::path::Path;

use crate::error::CtlError;

/// The largest bundle D-Bus carries (the system bus's default message size).
pub const MAX_BUNDLE_BYTES: u64 = 32 * 1024 * 1024;

/// Reads secret keys given on the command line as `-` (one line of standard
/// input, for one key at most) or `@FILE`; anything else is the key itself.
pub struct KeyReader<R> {
    stdin: R,
    stdin_used_by: Option<String>,
}

impl<R: BufRead> KeyReader<R> {
    pub fn new(stdin: R) -> Self {
        KeyReader {
            stdin,
            stdin_used_by: None,
        }
    }

    /// The key given for `--{option}` as `spec`.
    pub fn resolve(&mut self, option: &str, spec: &str) -> Result<String, CtlError> {
        let key = if spec == "-" {
            if let Some(previous) = &self.stdin_used_by {
                return Err(CtlError::Input(format!(
                    "--{option} and --{previous} both read standard input; give one of them as @FILE"
                )));
            }
            self.stdin_used_by = Some(option.to_string());
            let mut line = String::new();
            self.stdin.read_line(&mut line).map_err(|e| {
                CtlError::Input(format!("--{option}: cannot read standard input: {e}"))
            })?;
            line
        } else if let Some(path) = spec.strip_prefix('@') {
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(64 * 1024).read_to_string(&mut text))
                .map_err(|e| CtlError::Input(format!("--{option}: cannot read {path}: {e}")))?;
            text
        } else {
            spec.to_string()
        };
        let key = key.trim();
        if key.is_empty() {
            let from = match spec {
                "-" => "standard input",
                s if s.starts_with('@') => &s[1..],
                _ => "the command line",
            };
            return Err(CtlError::Input(format!(
                "--{option}: empty key from {from}"
            )));
        }
        Ok(key.to_string())
    }
}

/// Reads an app bundle, refusing one larger than D-Bus carries.
pub fn read_bundle(path: &Path) -> Result<Vec<u8>, CtlError> {
    let unreadable =
        |e: std::io::Error| CtlError::Input(format!("cannot read {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(CtlError::Input(format!("{} is not a file", path.display())));
    }
    if meta.len() > MAX_BUNDLE_BYTES {
        return Err(too_large(path, meta.len()));
    }
    let mut bundle = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // Read one byte more than the limit, in case the file grew meanwhile.
    file.take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut bundle)
        .map_err(unreadable)?;
    if bundle.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(too_large(path, bundle.len() as u64));
    }
    Ok(bundle)
}

fn too_large(path: &Path, len: u64) -> CtlError {
    CtlError::Input(format!(
        "{} is {} bytes; bundles are at most 32 MiB ({MAX_BUNDLE_BYTES} bytes) over D-Bus",
        path.display(),
        len
    ))
}

/// The payload of `lora downlinks send`, from --hex, --base64 or --text.
pub fn downlink_payload(
    hex_digits: Option<&str>,
    b64: Option<&str>,
    text: Option<&str>,
) -> Result<Vec<u8>, CtlError> {
    use base64::Engine as _;
    let bytes = match (hex_digits, b64, text) {
        (Some(h), None, None) => {
            let h: String = h.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            hex::decode(&h).map_err(|e| CtlError::Input(format!("--hex: {e}")))?
        }
        (None, Some(b), None) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| CtlError::Input(format!("--base64: {e}")))?,
        (None, None, Some(t)) => t.as_bytes().to_vec(),
        _ => {
            return Err(CtlError::Input(
                "give the payload as exactly one of --hex, --base64, --text".into(),
            ))
        }
    };
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn key_from_stdin_or_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("appskey");
        std::fs::write(&file, "00112233445566778899AABBCCDDEEFF\n").expect("write");

        let mut keys = KeyReader::new(Cursor::new(
            "  0123456789abcdef0123456789ABCDEF \nsecond line\n",
        ));
        assert_eq!(
            keys.resolve("nwk-s-key", "-").expect("stdin"),
            "0123456789abcdef0123456789ABCDEF"
        );
        let spec = format!("@{}", file.display());
        assert_eq!(
            keys.resolve("app-s-key", &spec).expect("file"),
            "00112233445566778899AABBCCDDEEFF"
        );
        assert_eq!(
            keys.resolve("app-key", "FFEEDDCCBBAA99887766554433221100")
                .expect("literal"),
            "FFEEDDCCBBAA99887766554433221100"
        );
    }

    #[test]
    fn stdin_serves_one_key_only() {
        let mut keys = KeyReader::new(Cursor::new("a\nb\n"));
        keys.resolve("nwk-s-key", "-").expect("first");
        let err = keys.resolve("app-s-key", "-").expect_err("second");
        assert!(err.to_string().contains("--nwk-s-key"), "{err}");
    }

    #[test]
    fn missing_or_empty_key_sources_are_input_errors() {
        let mut keys = KeyReader::new(Cursor::new(""));
        let err = keys.resolve("app-key", "-").expect_err("empty stdin");
        assert_eq!(err.exit(), crate::error::Exit::InvalidInput);
        let err = keys
            .resolve("app-key", "@/nonexistent/gatewayctl/key")
            .expect_err("missing file");
        assert!(
            err.to_string().contains("/nonexistent/gatewayctl/key"),
            "{err}"
        );
        assert_eq!(err.exit(), crate::error::Exit::InvalidInput);
    }

    #[test]
    fn bundles_over_32_mib_are_refused_before_calling() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small = dir.path().join("small.gwapp");
        std::fs::write(&small, b"bundle").expect("write");
        assert_eq!(read_bundle(&small).expect("small"), b"bundle");

        let big = dir.path().join("big.gwapp");
        let f = std::fs::File::create(&big).expect("create");
        f.set_len(MAX_BUNDLE_BYTES + 1).expect("sparse file");
        let err = read_bundle(&big).expect_err("too large");
        assert!(err.to_string().contains("32 MiB"), "{err}");
        assert_eq!(err.exit(), crate::error::Exit::InvalidInput);

        let err = read_bundle(&dir.path().join("missing.gwapp")).expect_err("missing");
        assert_eq!(err.exit(), crate::error::Exit::InvalidInput);
        let err = read_bundle(dir.path()).expect_err("directory");
        assert_eq!(err.exit(), crate::error::Exit::InvalidInput);
    }
}
