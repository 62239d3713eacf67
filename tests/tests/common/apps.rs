//! Edge-app guests and signed bundles for the end-to-end tests: the
//! components built by `bash edge-apps/build-guests.sh`, and a release key
//! that signs them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use gatewayd_artifact::{Algorithm, SigningKey};

// ---------------------------------------------------------------- guests

/// The directory holding `<name>.wasm` + `<name>.manifest.toml`.
pub fn guest_dir() -> PathBuf {
    let dir = gatewayd_tests::artifact_dir("GATEWAYD_GUEST_DIR", "edge-apps/components");
    assert!(
        dir.join("unit-convert.wasm").is_file(),
        "edge-app guest components not found in {}: run `bash edge-apps/build-guests.sh` \
         first (or point GATEWAYD_GUEST_DIR at the components)",
        dir.display()
    );
    dir
}

/// A guest's shipped manifest, parsed for editing.
pub fn manifest(name: &str) -> toml::Table {
    let path = guest_dir().join(format!("{name}.manifest.toml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `bash edge-apps/build-guests.sh`)",
            path.display()
        )
    });
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn module(name: &str) -> Vec<u8> {
    let path = guest_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `bash edge-apps/build-guests.sh`)",
            path.display()
        )
    })
}

/// `table[key]` as a table (created when missing).
pub fn section<'a>(table: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    table
        .entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("manifest: {key} is not a table"))
}

/// Replaces the manifest's selectors with one.
pub fn select(m: &mut toml::Table, device: &str, measurements: &[&str]) {
    let mut s = toml::Table::new();
    s.insert("device".into(), device.into());
    s.insert(
        "measurements".into(),
        toml::Value::Array(measurements.iter().map(|&x| x.into()).collect()),
    );
    m.insert("select".into(), toml::Value::Array(vec![s.into()]));
}

/// A release key (trusted by the gateways made with [`edge_gateway`]) and
/// the bundles it signs.
pub struct Publisher {
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    pub pub_path: PathBuf,
    pub made: AtomicUsize,
}

impl Publisher {
    pub fn new() -> Publisher {
        guest_dir(); // fail early, with what to do, when the guests are missing
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(Algorithm::Ed25519).unwrap();
        let pub_path = dir.path().join("release.pub");
        key.public().save(&pub_path).unwrap();
        Publisher {
            dir,
            key,
            pub_path,
            made: AtomicUsize::new(0),
        }
    }

    pub fn key_id(&self) -> String {
        self.key.key_id().to_string()
    }

    /// Packs and signs guest `name` with its manifest as `edit` leaves it;
    /// returns the bundle's path.
    pub fn bundle(&self, name: &str, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
        self.bundle_with_models(name, &[], edit)
    }

    pub fn bundle_with_models(
        &self,
        name: &str,
        models: &[(String, Vec<u8>)],
        edit: impl FnOnce(&mut toml::Table),
    ) -> PathBuf {
        let mut m = manifest(name);
        edit(&mut m);
        let text = toml::to_string(&m).unwrap();
        let bytes = gatewayd_artifact::pack(
            &text,
            &module(name),
            models,
            std::slice::from_ref(&self.key),
        )
        .unwrap_or_else(|e| panic!("packing {name}: {e}\n{text}"));
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("{name}-{n}.gwapp"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}
