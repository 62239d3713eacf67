//! Behaviour of the LoRaWAN device registry: parsing, `AddDevice`
//! validation (docs/dbus.md), persistence, file permissions, key secrecy,
//! change notification.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gatewayd_adapter_lorawan::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const DEV_EUI: &str = "70B3D57ED0000001";
const JOIN_EUI: &str = "0000000000000000";
const APP_KEY: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
const NWK_S_KEY: &str = "A1B2C3D4E5F60718293A4B5C6D7E8F90";
const APP_S_KEY: &str = "0F1E2D3C4B5A69788796A5B4C3D2E1F0";
const DEV_ADDR: &str = "26011BDA";

fn s(v: &str) -> FieldValue {
    FieldValue::Str(v.to_owned())
}

fn fields(pairs: &[(&str, FieldValue)]) -> BTreeMap<String, FieldValue> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn otaa_fields(dev_eui: &str) -> BTreeMap<String, FieldValue> {
    fields(&[
        ("dev_eui", s(dev_eui)),
        ("join_eui", s(JOIN_EUI)),
        ("app_key", s(APP_KEY)),
    ])
}

fn abp_fields(dev_eui: &str, dev_addr: &str) -> BTreeMap<String, FieldValue> {
    fields(&[
        ("dev_eui", s(dev_eui)),
        ("dev_addr", s(dev_addr)),
        ("nwk_s_key", s(NWK_S_KEY)),
        ("app_s_key", s(APP_S_KEY)),
    ])
}

/// Builds a base request to modify.
type Base = fn() -> BTreeMap<String, FieldValue>;

fn req(f: &BTreeMap<String, FieldValue>) -> AddRequest {
    AddRequest::from_fields(f).expect("valid request")
}

fn invalid_key(f: &BTreeMap<String, FieldValue>) -> (String, String) {
    match AddRequest::from_fields(f) {
        Err(RegistryError::Invalid { key, message }) => (key, message),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn eui(v: &str) -> Eui64 {
    v.parse().unwrap()
}

fn key(v: &str) -> AesKey {
    AesKey::from_hex(v).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Neither case of any of the test keys appears in `text`.
fn assert_no_key_hex(text: &str) {
    for k in [APP_KEY, NWK_S_KEY, APP_S_KEY] {
        assert!(!text.contains(k), "key hex in {text:?}");
        assert!(!text.contains(&k.to_lowercase()), "key hex in {text:?}");
        // Nor a recognisable part of one.
        assert!(!text.contains(&k[..12]), "key hex in {text:?}");
        assert!(
            !text.contains(&k[..12].to_lowercase()),
            "key hex in {text:?}"
        );
    }
}

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
    reg: LoraRegistry,
}

fn open_db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lorawan.db");
    let reg = LoraRegistry::open(&path).unwrap();
    Db {
        _dir: dir,
        path,
        reg,
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// --- identifiers -----------------------------------------------------------

#[test]
fn eui_parses_16_hex_digits_in_either_case() {
    let want = Eui64([0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0x00, 0x00, 0x01]);
    assert_eq!(eui("70B3D57ED0000001"), want);
    assert_eq!(eui("70b3d57ed0000001"), want);
    assert_eq!(eui("70b3D57Ed0000001"), want);
}

#[test]
fn eui_parses_dash_and_colon_separated_bytes() {
    let want = Eui64([0x70, 0xB3, 0xD5, 0x7E, 0xD0, 0x00, 0x00, 0x01]);
    assert_eq!(eui("70-B3-D5-7E-D0-00-00-01"), want);
    assert_eq!(eui("70:b3:d5:7e:d0:00:00:01"), want);
}

#[test]
fn eui_refuses_wrong_length() {
    for bad in [
        "",
        "70B3D57ED000000",
        "70B3D57ED00000011",
        "70B3D57ED0000001 ",
    ] {
        assert!(
            matches!(
                bad.parse::<Eui64>(),
                Err(ParseHexError::Length { expected: 16, .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        "70-B3-D5-7E-D0-00-00".parse::<Eui64>(),
        Err(ParseHexError::Separator)
    ));
}

#[test]
fn eui_refuses_non_hex() {
    assert_eq!(
        "70B3D57ED000000G".parse::<Eui64>(),
        Err(ParseHexError::NotHex { position: 16 })
    );
    assert_eq!(
        "0x70B3D57ED00000".parse::<Eui64>(),
        Err(ParseHexError::NotHex { position: 2 })
    );
    assert_eq!(
        "70-B3-D5-7E-D0-00-00-0Z".parse::<Eui64>(),
        Err(ParseHexError::NotHex { position: 23 })
    );
    // Non-ASCII counts as one character.
    assert!(matches!(
        "70B3D57ED000000é".parse::<Eui64>(),
        Err(ParseHexError::NotHex { position: 16 })
    ));
}

#[test]
fn eui_refuses_misplaced_or_mixed_separators() {
    for bad in [
        "70B3-D57E-D000-0001",
        "70-B3-D5-7E:D0-00-00-01",
        "70--B3D57ED00000001",
        "-70B3D57ED00000001-----",
        "70 B3 D5 7E D0 00 00 01",
        "70_B3_D5_7E_D0_00_00_01",
    ] {
        assert!(bad.parse::<Eui64>().is_err(), "{bad:?}");
    }
}

#[test]
fn eui_displays_and_debugs_as_16_uppercase_hex() {
    let e = eui("70-b3-d5-7e-d0-00-00-0a");
    assert_eq!(e.to_string(), "70B3D57ED000000A");
    assert_eq!(format!("{e:?}"), "70B3D57ED000000A");
}

#[test]
fn dev_addr_parses_8_hex_digits_and_displays_uppercase() {
    let a: DevAddr = "26011bda".parse().unwrap();
    assert_eq!(a, DevAddr(0x2601_1BDA));
    assert_eq!(a.to_string(), "26011BDA");
    assert_eq!(DevAddr(0xAB).to_string(), "000000AB");
    assert!("26011BD".parse::<DevAddr>().is_err());
    assert!("26-01-1B-DA".parse::<DevAddr>().is_err());
}

// --- AddDevice validation --------------------------------------------------

#[test]
fn otaa_device_is_accepted_with_defaults() {
    let r = req(&otaa_fields("70b3d57ed0000001"));
    assert!(!r.replace);
    assert_eq!(r.spec.dev_eui, eui(DEV_EUI));
    assert_eq!(r.spec.name, DEV_EUI, "default name is the canonical DevEUI");
    assert_eq!(r.spec.profile, "cayenne");
    assert_eq!(
        r.spec.activation,
        Activation::Otaa {
            join_eui: eui(JOIN_EUI),
            app_key: key(APP_KEY)
        }
    );
}

#[test]
fn abp_device_is_accepted_with_name_profile_and_replace() {
    let mut f = abp_fields("70-B3-D5-7E-D0-00-00-01", &DEV_ADDR.to_lowercase());
    f.insert("name".into(), s("Boiler room — sensor 1"));
    f.insert("profile".into(), s("my_codec-v1.2"));
    f.insert("replace".into(), FieldValue::Bool(true));
    let r = req(&f);
    assert!(r.replace);
    assert_eq!(r.spec.name, "Boiler room — sensor 1");
    assert_eq!(r.spec.profile, "my_codec-v1.2");
    assert_eq!(
        r.spec.activation,
        Activation::Abp {
            dev_addr: DevAddr(0x2601_1BDA),
            nwk_s_key: key(NWK_S_KEY),
            app_s_key: key(&APP_S_KEY.to_lowercase()),
        }
    );
}

#[test]
fn mix_of_otaa_and_abp_keys_is_refused_naming_a_key() {
    let mut f = otaa_fields(DEV_EUI);
    f.insert("dev_addr".into(), s(DEV_ADDR));
    let (k, message) = invalid_key(&f);
    assert_eq!(k, "dev_addr");
    assert!(message.contains("join_eui"), "{message}");

    let mut f = abp_fields(DEV_EUI, DEV_ADDR);
    f.insert("app_key".into(), s(APP_KEY));
    assert_eq!(invalid_key(&f).0, "dev_addr");
}

#[test]
fn missing_app_key_is_refused_naming_app_key() {
    let mut f = otaa_fields(DEV_EUI);
    f.remove("app_key");
    assert_eq!(invalid_key(&f).0, "app_key");
}

#[test]
fn incomplete_abp_is_refused_naming_the_missing_key() {
    for missing in ["dev_addr", "nwk_s_key", "app_s_key"] {
        let mut f = abp_fields(DEV_EUI, DEV_ADDR);
        f.remove(missing);
        assert_eq!(invalid_key(&f).0, missing);
    }
    let mut f = otaa_fields(DEV_EUI);
    f.remove("join_eui");
    assert_eq!(invalid_key(&f).0, "join_eui");
}

#[test]
fn no_activation_keys_is_refused() {
    let (k, message) = invalid_key(&fields(&[("dev_eui", s(DEV_EUI))]));
    assert_eq!(k, "join_eui");
    assert!(message.contains("required"), "{message}");
}

#[test]
fn missing_or_bad_dev_eui_is_refused_naming_dev_eui() {
    let mut f = otaa_fields(DEV_EUI);
    f.remove("dev_eui");
    assert_eq!(invalid_key(&f), ("dev_eui".into(), "required".into()));
    assert_eq!(invalid_key(&otaa_fields("70B3D57ED00000")).0, "dev_eui");
}

#[test]
fn wrong_type_for_replace_is_refused() {
    for v in [s("true"), FieldValue::Other("u".into())] {
        let mut f = otaa_fields(DEV_EUI);
        f.insert("replace".into(), v);
        let (k, message) = invalid_key(&f);
        assert_eq!(k, "replace");
        assert!(message.contains("boolean"), "{message}");
    }
}

#[test]
fn wrong_type_for_a_string_key_is_refused_naming_it() {
    for k in ["dev_eui", "name", "profile", "join_eui", "app_key"] {
        let mut f = otaa_fields(DEV_EUI);
        f.insert(k.into(), FieldValue::Bool(true));
        let (got, message) = invalid_key(&f);
        assert_eq!(got, k);
        assert!(message.contains("string"), "{message}");
    }
    let mut f = otaa_fields(DEV_EUI);
    f.insert("app_key".into(), FieldValue::Other("ay".into()));
    assert_eq!(invalid_key(&f).0, "app_key");
}

#[test]
fn unknown_key_is_refused_naming_it() {
    let mut f = otaa_fields(DEV_EUI);
    f.insert("appkey".into(), s(APP_KEY));
    let (k, message) = invalid_key(&f);
    assert_eq!(k, "appkey");
    assert_eq!(message, "unknown key");
    let err = AddRequest::from_fields(&f).unwrap_err();
    assert_eq!(err.to_string(), "appkey: unknown key");
    assert_no_key_hex(&err.to_string());

    // A hostile key name is escaped and shortened in the error.
    let mut f = otaa_fields(DEV_EUI);
    f.insert(format!("x\n{}", "y".repeat(200)), FieldValue::Bool(true));
    let (k, _) = invalid_key(&f);
    assert!(!k.contains('\n') && k.chars().count() <= 66, "{k:?}");
}

#[test]
fn hex_lengths_are_checked_naming_the_key() {
    let cases: [(&str, &str, Base); 5] = [
        ("join_eui", "0000000000000", || otaa_fields(DEV_EUI)),
        ("app_key", &APP_KEY[..31], || otaa_fields(DEV_EUI)),
        ("dev_addr", "26011BDA00", || abp_fields(DEV_EUI, DEV_ADDR)),
        ("nwk_s_key", "A1B2C3D4E5F60718293A4B5C6D7E8F9000", || {
            abp_fields(DEV_EUI, DEV_ADDR)
        }),
        ("app_s_key", "0F1E2D3C4B5A69788796A5B4C3D2E1FX", || {
            abp_fields(DEV_EUI, DEV_ADDR)
        }),
    ];
    for (k, bad, base) in cases {
        let mut f = base();
        f.insert(k.into(), s(bad));
        assert_eq!(invalid_key(&f).0, k, "{k} = {bad}");
    }
    // Keys take no separators.
    let mut f = otaa_fields(DEV_EUI);
    f.insert(
        "app_key".into(),
        s("2B-7E-15-16-28-AE-D2-A6-AB-F7-15-88-09-CF-4F-3C"),
    );
    assert_eq!(invalid_key(&f).0, "app_key");
}

#[test]
fn name_must_be_1_to_64_printable_characters() {
    for (bad, why) in [
        ("", "empty"),
        ("tab\there", "control"),
        ("line\nbreak", "control"),
        ("bidi\u{202E}override", "format"),
        ("zero\u{200B}width", "format"),
    ] {
        let mut f = otaa_fields(DEV_EUI);
        f.insert("name".into(), s(bad));
        assert_eq!(invalid_key(&f).0, "name", "{why}");
    }
    let mut f = otaa_fields(DEV_EUI);
    f.insert("name".into(), s(&"é".repeat(65)));
    assert_eq!(invalid_key(&f).0, "name");
    f.insert("name".into(), s(&"é".repeat(64)));
    assert_eq!(req(&f).spec.name.chars().count(), 64);
}

#[test]
fn profile_must_be_1_to_64_of_the_allowed_characters() {
    for bad in ["", "has space", "slash/", "ünï", &"p".repeat(65)] {
        let mut f = otaa_fields(DEV_EUI);
        f.insert("profile".into(), s(bad));
        assert_eq!(invalid_key(&f).0, "profile", "{bad:?}");
    }
    let mut f = otaa_fields(DEV_EUI);
    f.insert("profile".into(), s(&"A-z_0.9".repeat(10)[..64]));
    assert!(AddRequest::from_fields(&f).is_ok());
}

// --- the store -------------------------------------------------------------

#[test]
fn registry_is_clone_send_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<LoraRegistry>();
}

#[test]
fn duplicate_is_refused_unless_replace() {
    let db = open_db();
    db.reg.add(req(&otaa_fields(DEV_EUI))).unwrap();
    let created = db.reg.list().unwrap()[0].created_ms;

    // Same DevEUI written differently is the same device.
    let mut f = abp_fields("70b3d57ed0000001", DEV_ADDR);
    let err = db.reg.add(req(&f)).unwrap_err();
    assert!(
        matches!(&err, RegistryError::AlreadyExists(e) if e == DEV_EUI),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("device {DEV_EUI} already exists (use replace)")
    );
    // Nothing changed.
    assert!(matches!(
        db.reg.get(eui(DEV_EUI)).unwrap().unwrap().activation,
        Activation::Otaa { .. }
    ));

    f.insert("replace".into(), FieldValue::Bool(true));
    db.reg.add(req(&f)).unwrap();
    let got = db.reg.get(eui(DEV_EUI)).unwrap().unwrap();
    assert_eq!(got, req(&f).spec);
    let list = db.reg.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].activation, "abp");
    assert_eq!(list[0].created_ms, created, "replace keeps created_ms");

    // replace = false explicitly is the default.
    let mut f = otaa_fields(DEV_EUI);
    f.insert("replace".into(), FieldValue::Bool(false));
    assert!(matches!(
        db.reg.add(req(&f)),
        Err(RegistryError::AlreadyExists(_))
    ));
}

#[test]
fn remove_of_unknown_device_is_not_found() {
    let db = open_db();
    let err = db.reg.remove("70b3d57ed0000009").unwrap_err();
    assert!(
        matches!(&err, RegistryError::NotFound(e) if e == "70B3D57ED0000009"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "no device 70B3D57ED0000009");
}

#[test]
fn remove_with_bad_dev_eui_is_invalid() {
    let db = open_db();
    match db.reg.remove("not-an-eui") {
        Err(RegistryError::Invalid { key, .. }) => assert_eq!(key, "dev_eui"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn remove_deletes_the_device() {
    let db = open_db();
    db.reg.add(req(&otaa_fields(DEV_EUI))).unwrap();
    db.reg.remove("70:b3:d5:7e:d0:00:00:01").unwrap();
    assert_eq!(db.reg.get(eui(DEV_EUI)).unwrap(), None);
    assert!(db.reg.list().unwrap().is_empty());
}

#[test]
fn devices_persist_across_reopen_with_the_same_keys() {
    let db = open_db();
    let otaa = req(&otaa_fields(DEV_EUI)).spec;
    let abp = req(&abp_fields("70B3D57ED0000002", DEV_ADDR)).spec;
    db.reg
        .add(AddRequest {
            spec: otaa.clone(),
            replace: false,
        })
        .unwrap();
    db.reg
        .add(AddRequest {
            spec: abp.clone(),
            replace: false,
        })
        .unwrap();
    let before = db.reg.list().unwrap();
    drop(db.reg);

    let reg = LoraRegistry::open(&db.path).unwrap();
    assert_eq!(reg.get(otaa.dev_eui).unwrap(), Some(otaa.clone()));
    assert_eq!(reg.get(abp.dev_eui).unwrap(), Some(abp.clone()));
    match reg.get(otaa.dev_eui).unwrap().unwrap().activation {
        Activation::Otaa { app_key, .. } => assert_eq!(hex(&app_key.0), APP_KEY),
        other => panic!("{other:?}"),
    }
    assert_eq!(reg.list().unwrap(), before);
    assert_eq!(reg.all().unwrap(), vec![otaa, abp]);
}

#[test]
fn list_is_sorted_by_dev_eui_and_shows_identifiers_only() {
    let db = open_db();
    db.reg
        .add(req(&abp_fields("FFFFFFFFFFFFFFF0", DEV_ADDR)))
        .unwrap();
    db.reg.add(req(&otaa_fields("0000000000000001"))).unwrap();
    db.reg.add(req(&otaa_fields("A000000000000000"))).unwrap();
    let list = db.reg.list().unwrap();
    let euis: Vec<&str> = list.iter().map(|d| d.dev_eui.as_str()).collect();
    assert_eq!(
        euis,
        ["0000000000000001", "A000000000000000", "FFFFFFFFFFFFFFF0"]
    );

    let otaa = &list[0];
    assert_eq!(otaa.activation, "otaa");
    assert_eq!(otaa.join_eui.as_deref(), Some(JOIN_EUI));
    assert_eq!(otaa.dev_addr, None);
    assert_eq!(otaa.name, "0000000000000001");
    assert_eq!(otaa.profile, "cayenne");
    assert!(otaa.created_ms > 1_600_000_000_000);

    let abp = &list[2];
    assert_eq!(abp.activation, "abp");
    assert_eq!(abp.join_eui, None);
    assert_eq!(abp.dev_addr.as_deref(), Some(DEV_ADDR));
    assert_no_key_hex(&format!("{list:?}"));
}

#[test]
fn by_dev_addr_finds_abp_devices_only() {
    let db = open_db();
    db.reg
        .add(req(&abp_fields("0000000000000002", DEV_ADDR)))
        .unwrap();
    db.reg
        .add(req(&abp_fields("0000000000000003", "26011BDB")))
        .unwrap();
    db.reg.add(req(&otaa_fields("0000000000000004"))).unwrap();

    let found = db.reg.by_dev_addr(DevAddr(0x2601_1BDA)).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].dev_eui, eui("0000000000000002"));
    match &found[0].activation {
        Activation::Abp {
            nwk_s_key,
            app_s_key,
            ..
        } => {
            assert_eq!(hex(&nwk_s_key.0), NWK_S_KEY);
            assert_eq!(hex(&app_s_key.0), APP_S_KEY);
        }
        other => panic!("{other:?}"),
    }
    assert!(db.reg.by_dev_addr(DevAddr(1)).unwrap().is_empty());
}

#[test]
fn dev_addr_of_another_abp_device_is_refused() {
    let db = open_db();
    db.reg
        .add(req(&abp_fields("0000000000000002", DEV_ADDR)))
        .unwrap();
    let err = db
        .reg
        .add(req(&abp_fields("0000000000000003", DEV_ADDR)))
        .unwrap_err();
    match &err {
        RegistryError::Invalid { key, message } => {
            assert_eq!(key, "dev_addr");
            assert!(message.contains("0000000000000002"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_no_key_hex(&err.to_string());
    // Replacing the device that owns the address keeps it.
    let mut f = abp_fields("0000000000000002", DEV_ADDR);
    f.insert("replace".into(), FieldValue::Bool(true));
    f.insert("name".into(), s("renamed"));
    db.reg.add(req(&f)).unwrap();
    assert_eq!(db.reg.list().unwrap()[0].name, "renamed");
    assert_eq!(db.reg.list().unwrap().len(), 1);
}

#[test]
fn add_rechecks_a_spec_built_by_hand() {
    let db = open_db();
    let mut spec = req(&otaa_fields(DEV_EUI)).spec;
    spec.profile = "no spaces please".into();
    match db.reg.add(AddRequest {
        spec,
        replace: false,
    }) {
        Err(RegistryError::Invalid { key, .. }) => assert_eq!(key, "profile"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn generation_bumps_on_add_and_remove_only_when_they_succeed() {
    let db = open_db();
    let mut rx = db.reg.generation();
    assert_eq!(*rx.borrow_and_update(), 0);

    db.reg.add(req(&otaa_fields(DEV_EUI))).unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 1);

    assert!(db.reg.add(req(&otaa_fields(DEV_EUI))).is_err());
    assert!(db.reg.remove("0000000000000009").is_err());
    assert!(!rx.has_changed().unwrap(), "failed calls change nothing");

    // A clone shares the generation.
    let clone = db.reg.clone();
    clone.remove(DEV_EUI).unwrap();
    assert_eq!(*rx.borrow_and_update(), 2);
    assert_eq!(*db.reg.generation().borrow(), 2);
}

#[cfg(unix)]
#[test]
fn new_database_file_has_mode_0600() {
    let db = open_db();
    db.reg.add(req(&otaa_fields(DEV_EUI))).unwrap();
    assert_eq!(mode(&db.path), 0o600);
    for suffix in ["-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.path.display()));
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{suffix}");
        }
    }
}

#[cfg(unix)]
#[test]
fn loose_existing_database_file_is_tightened_to_0600() {
    use std::os::unix::fs::PermissionsExt;
    let db = open_db();
    db.reg.add(req(&otaa_fields(DEV_EUI))).unwrap();
    drop(db.reg);
    for p in [
        &db.path,
        &PathBuf::from(format!("{}-wal", db.path.display())),
    ] {
        if p.exists() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let reg = LoraRegistry::open(&db.path).unwrap();
    assert_eq!(mode(&db.path), 0o600);
    let wal = PathBuf::from(format!("{}-wal", db.path.display()));
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
    assert!(reg.get(eui(DEV_EUI)).unwrap().is_some());

    // An empty pre-existing 0644 file is tightened too and becomes a registry.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lorawan.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    LoraRegistry::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn open_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lorawan.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    match LoraRegistry::open(&path) {
        Err(RegistryError::Storage { message, .. }) => assert!(message.contains("99"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn open_of_a_missing_directory_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope").join("lorawan.db");
    assert!(matches!(
        LoraRegistry::open(&path),
        Err(RegistryError::Storage { .. })
    ));
}

// --- secrecy ---------------------------------------------------------------

#[test]
fn aes_key_debug_and_display_are_redacted() {
    let k = key(APP_KEY);
    assert_eq!(format!("{k:?}"), "AesKey(<redacted>)");
    assert_eq!(format!("{k}"), "AesKey(<redacted>)");
    assert_eq!(format!("{k:#?}"), "AesKey(<redacted>)");
}

#[test]
fn device_spec_debug_and_display_contain_no_key_hex() {
    for f in [otaa_fields(DEV_EUI), abp_fields(DEV_EUI, DEV_ADDR)] {
        let r = req(&f);
        for text in [
            format!("{:?}", r.spec),
            format!("{:#?}", r.spec),
            format!("{}", r.spec),
            format!("{:?}", r.spec.activation),
            format!("{}", r.spec.activation),
            format!("{r:?}"),
            format!("{f:?}"),
        ] {
            assert_no_key_hex(&text);
        }
    }
    let spec = req(&otaa_fields(DEV_EUI)).spec;
    assert_eq!(
        spec.to_string(),
        format!("{DEV_EUI} \"{DEV_EUI}\" profile cayenne OTAA (join_eui {JOIN_EUI})")
    );
}

#[test]
fn error_display_contains_no_key_hex() {
    let mut errors = Vec::new();
    // Bad key values: too short, too long, a bad character, separators.
    for k in ["app_key", "nwk_s_key", "app_s_key"] {
        let (base, value): (Base, &str) = match k {
            "app_key" => (|| otaa_fields(DEV_EUI), APP_KEY),
            "nwk_s_key" => (|| abp_fields(DEV_EUI, DEV_ADDR), NWK_S_KEY),
            _ => (|| abp_fields(DEV_EUI, DEV_ADDR), APP_S_KEY),
        };
        for bad in [
            value[..31].to_owned(),
            format!("{value}0"),
            format!("{}Z", &value[..31]),
            format!("{} ", value.to_lowercase()),
        ] {
            let mut f = base();
            f.insert(k.into(), s(&bad));
            errors.push(AddRequest::from_fields(&f).unwrap_err());
        }
    }
    // Mixed activation with every key present.
    let mut f = otaa_fields(DEV_EUI);
    f.extend(abp_fields(DEV_EUI, DEV_ADDR));
    errors.push(AddRequest::from_fields(&f).unwrap_err());
    // Registry refusals.
    let db = open_db();
    db.reg.add(req(&abp_fields(DEV_EUI, DEV_ADDR))).unwrap();
    errors.push(db.reg.add(req(&abp_fields(DEV_EUI, DEV_ADDR))).unwrap_err());
    errors.push(
        db.reg
            .add(req(&abp_fields("0000000000000002", DEV_ADDR)))
            .unwrap_err(),
    );
    errors.push(db.reg.remove("0000000000000002").unwrap_err());

    for e in &errors {
        assert_no_key_hex(&e.to_string());
        assert_no_key_hex(&format!("{e:?}"));
    }
}

#[test]
fn corrupt_stored_key_is_a_storage_error_without_key_hex() {
    let db = open_db();
    db.reg.add(req(&otaa_fields(DEV_EUI))).unwrap();
    {
        // Shorten the stored key behind the registry's back.
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        conn.pragma_update(None, "ignore_check_constraints", true)
            .unwrap();
        let short = &hex_bytes(APP_KEY)[..15];
        conn.execute("UPDATE devices SET app_key = ?1", [short])
            .unwrap();
    }
    let err = db.reg.get(eui(DEV_EUI)).unwrap_err();
    match &err {
        RegistryError::Storage { path, message } => {
            assert_eq!(path, &db.path.display().to_string());
            assert!(
                message.contains("app_key") && message.contains("15 bytes"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_no_key_hex(&err.to_string());
    assert_no_key_hex(&format!("{err:?}"));
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn key_bytes_are_zeroed_on_drop() {
    let mut k = std::mem::ManuallyDrop::new(key(APP_KEY));
    let p: *const [u8; 16] = &k.0;
    // SAFETY: dropped once; the bytes are read back through a raw pointer
    // to storage that ManuallyDrop keeps alive (plain u8s, no heap).
    unsafe {
        std::mem::ManuallyDrop::drop(&mut k);
        assert_eq!(std::ptr::read_volatile(p), [0u8; 16]);
    }
}

// --- properties ------------------------------------------------------------

/// A test-side value with a full Debug (FieldValue's hides strings).
#[derive(Debug, Clone)]
enum V {
    S(String),
    B(bool),
    O(String),
}

impl V {
    fn field(&self) -> FieldValue {
        match self {
            V::S(s) => FieldValue::Str(s.clone()),
            V::B(b) => FieldValue::Bool(*b),
            V::O(s) => FieldValue::Other(s.clone()),
        }
    }
}

fn to_fields(m: &BTreeMap<String, V>) -> BTreeMap<String, FieldValue> {
    m.iter().map(|(k, v)| (k.clone(), v.field())).collect()
}

fn arbitrary_value() -> impl Strategy<Value = V> {
    prop_oneof![
        any::<String>().prop_map(V::S),
        any::<bool>().prop_map(V::B),
        "[a-z(){}]{0,4}".prop_map(V::O),
    ]
}

fn plausible_value(key: &'static str) -> BoxedStrategy<V> {
    if key == "replace" {
        return prop_oneof![8 => any::<bool>().prop_map(V::B), 1 => arbitrary_value()].boxed();
    }
    // (valid, near miss)
    let (good, near): (BoxedStrategy<String>, BoxedStrategy<String>) = match key {
        "dev_eui" | "join_eui" => (
            prop_oneof![
                "[0-9a-fA-F]{16}",
                "([0-9A-F]{2}-){7}[0-9A-F]{2}",
                "([0-9a-f]{2}:){7}[0-9a-f]{2}",
            ]
            .boxed(),
            "[0-9a-fA-F:-]{14,24}".boxed(),
        ),
        "app_key" | "nwk_s_key" | "app_s_key" => {
            ("[0-9a-fA-F]{32}".boxed(), "[0-9a-fA-FgG -]{30,34}".boxed())
        }
        "dev_addr" => ("[0-9a-fA-F]{8}".boxed(), "[0-9a-fA-F:]{6,10}".boxed()),
        "name" => (
            "[\\PC&&[^\u{200B}-\u{206F}]]{1,64}".boxed(),
            "\\PC{0,70}".boxed(),
        ),
        "profile" => (
            "[A-Za-z0-9_.-]{1,64}".boxed(),
            "[A-Za-z0-9_. /-]{0,66}".boxed(),
        ),
        _ => (any::<String>().boxed(), any::<String>().boxed()),
    };
    prop_oneof![
        12 => good.prop_map(V::S),
        1 => near.prop_map(V::S),
        1 => arbitrary_value(),
    ]
    .boxed()
}

/// Maps that look like AddDevice requests: an OTAA or ABP set, or any
/// subset of the known keys, plus optional fields, sometimes an unknown key.
fn plausible_fields() -> impl Strategy<Value = BTreeMap<String, V>> {
    let base = prop_oneof![
        Just(vec!["dev_eui", "join_eui", "app_key"]),
        Just(vec!["dev_eui", "dev_addr", "nwk_s_key", "app_s_key"]),
        proptest::sample::subsequence(ADD_DEVICE_KEYS.to_vec(), 0..=ADD_DEVICE_KEYS.len()),
    ];
    let optional = proptest::sample::subsequence(vec!["name", "profile", "replace"], 0..=3);
    let extra = proptest::option::weighted(0.1, (any::<String>(), arbitrary_value()));
    (base, optional, extra)
        .prop_flat_map(|(base, optional, extra)| {
            let mut keys = base;
            keys.extend(optional);
            keys.sort_unstable();
            keys.dedup();
            let values: Vec<_> = keys
                .into_iter()
                .map(|k| plausible_value(k).prop_map(move |v| (k.to_owned(), v)))
                .collect();
            (values, Just(extra))
        })
        .prop_map(|(values, extra)| {
            let mut m: BTreeMap<String, V> = values.into_iter().collect();
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            m
        })
}

fn canonical(hex_in: &str) -> String {
    hex_in.replace(['-', ':'], "").to_uppercase()
}

proptest! {
    #[test]
    fn from_fields_never_panics_on_arbitrary_maps(
        m in proptest::collection::btree_map(
            prop_oneof![
                proptest::sample::select(ADD_DEVICE_KEYS.to_vec()).prop_map(str::to_owned),
                any::<String>(),
            ],
            arbitrary_value(),
            0..12,
        )
    ) {
        if let Err(e) = AddRequest::from_fields(&to_fields(&m)) {
            let invalid = matches!(e, RegistryError::Invalid { .. });
            prop_assert!(invalid, "{:?}", e);
        }
    }
}

#[test]
fn accepted_requests_round_trip_through_add_and_get() {
    let db = open_db();
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let accepted = std::cell::Cell::new(0u32);
    runner
        .run(&plausible_fields(), |m| {
            let f = to_fields(&m);
            let text = |k: &str| match m.get(k) {
                Some(V::S(s)) => Some(s.clone()),
                _ => None,
            };
            let r = match AddRequest::from_fields(&f) {
                Ok(r) => r,
                Err(e) => {
                    prop_assert!(
                        matches!(&e, RegistryError::Invalid { key, .. } if !key.is_empty()),
                        "{:?}",
                        e
                    );
                    // A refused key value is never echoed.
                    let msg = e.to_string();
                    for k in ["app_key", "nwk_s_key", "app_s_key"] {
                        if let Some(v) = text(k) {
                            if v.len() >= 8 && v.chars().all(|c| c.is_ascii_hexdigit()) {
                                prop_assert!(!msg.contains(&v), "{}", msg);
                            }
                        }
                    }
                    return Ok(());
                }
            };
            accepted.set(accepted.get() + 1);
            // What was accepted is what was sent.
            let spec = &r.spec;
            prop_assert_eq!(
                spec.dev_eui.to_string(),
                canonical(&text("dev_eui").unwrap())
            );
            prop_assert_eq!(
                &spec.name,
                &text("name").unwrap_or_else(|| spec.dev_eui.to_string())
            );
            prop_assert_eq!(
                &spec.profile,
                &text("profile").unwrap_or_else(|| "cayenne".into())
            );
            prop_assert_eq!(r.replace, matches!(m.get("replace"), Some(V::B(true))));
            match &spec.activation {
                Activation::Otaa { join_eui, app_key } => {
                    prop_assert_eq!(join_eui.to_string(), canonical(&text("join_eui").unwrap()));
                    prop_assert_eq!(hex(&app_key.0), text("app_key").unwrap().to_uppercase());
                }
                Activation::Abp {
                    dev_addr,
                    nwk_s_key,
                    app_s_key,
                } => {
                    prop_assert_eq!(
                        dev_addr.to_string(),
                        text("dev_addr").unwrap().to_uppercase()
                    );
                    prop_assert_eq!(hex(&nwk_s_key.0), text("nwk_s_key").unwrap().to_uppercase());
                    prop_assert_eq!(hex(&app_s_key.0), text("app_s_key").unwrap().to_uppercase());
                }
            }

            // And it round-trips through the store (which is empty here).
            db.reg
                .add(r.clone())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = db.reg.get(spec.dev_eui).unwrap();
            prop_assert_eq!(got.as_ref(), Some(spec));
            let list = db.reg.list().unwrap();
            prop_assert_eq!(list.len(), 1);
            prop_assert_eq!(&list[0].name, &spec.name);
            prop_assert_eq!(&list[0].activation, spec.activation.kind());
            if let Activation::Abp { dev_addr, .. } = &spec.activation {
                prop_assert_eq!(db.reg.by_dev_addr(*dev_addr).unwrap(), vec![spec.clone()]);
            }
            db.reg.remove(&spec.dev_eui.to_string()).unwrap();
            prop_assert!(db.reg.all().unwrap().is_empty());
            Ok(())
        })
        .unwrap();
    let accepted = accepted.get();
    eprintln!("{accepted} of 256 generated requests accepted");
    assert!(
        accepted >= 20,
        "only {accepted} accepted cases: strategy too weak"
    );
}

// --- the downlink queue ------------------------------------------------------

#[test]
fn enqueue_downlink_validates_and_names_the_field() {
    let db = open_db();
    db.reg.add(req(&otaa_fields(DEV_EUI))).unwrap();
    let field = |r: Result<u64, RegistryError>| match r {
        Err(RegistryError::Invalid { key, .. }) => key,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(
        field(db.reg.enqueue_downlink("xyz", 1, b"a", false)),
        "dev_eui"
    );
    assert_eq!(
        field(db.reg.enqueue_downlink(DEV_EUI, 0, b"a", false)),
        "fport"
    );
    assert_eq!(
        field(db.reg.enqueue_downlink(DEV_EUI, 224, b"a", false)),
        "fport"
    );
    let big = vec![0u8; downlinks::MAX_PAYLOAD + 1];
    assert_eq!(
        field(db.reg.enqueue_downlink(DEV_EUI, 1, &big, false)),
        "payload"
    );
    assert!(matches!(
        db.reg.enqueue_downlink("70B3D57ED00000FF", 1, b"a", false),
        Err(RegistryError::NotFound(e)) if e == "70B3D57ED00000FF"
    ));
    let max = vec![7u8; downlinks::MAX_PAYLOAD];
    db.reg.enqueue_downlink(DEV_EUI, 223, &max, true).unwrap();
    db.reg.enqueue_downlink(DEV_EUI, 1, b"", false).unwrap();
    assert_eq!(db.reg.downlinks(Some(DEV_EUI), 0).unwrap().len(), 2);
}

#[test]
fn the_downlink_queue_is_bounded_per_device() {
    let db = open_db();
    db.reg.add(req(&otaa_fields(DEV_EUI))).unwrap();
    db.reg.add(req(&otaa_fields("70B3D57ED0000002"))).unwrap();
    for i in 0..downlinks::MAX_QUEUED {
        db.reg
            .enqueue_downlink(DEV_EUI, 1, &[i as u8], false)
            .unwrap();
    }
    match db.reg.enqueue_downlink(DEV_EUI, 1, b"x", false) {
        Err(e @ RegistryError::QueueFull { .. }) => {
            assert!(e.to_string().contains("full"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // Another device's queue is its own.
    db.reg
        .enqueue_downlink("70B3D57ED0000002", 1, b"x", false)
        .unwrap();
}

#[test]
fn downlinks_list_in_order_clear_by_id_and_go_with_their_device() {
    let db = open_db();
    db.reg.add(req(&otaa_fields(DEV_EUI))).unwrap();
    db.reg.add(req(&otaa_fields("70B3D57ED0000002"))).unwrap();
    let a = db.reg.enqueue_downlink(DEV_EUI, 1, b"a", false).unwrap();
    let b = db
        .reg
        .enqueue_downlink("70B3D57ED0000002", 2, b"b", true)
        .unwrap();
    let c = db.reg.enqueue_downlink(DEV_EUI, 3, b"c", false).unwrap();
    assert!(a < b && b < c);
    let all = db.reg.downlinks(None, 0).unwrap();
    assert_eq!(all.iter().map(|d| d.id).collect::<Vec<_>>(), [a, b, c]);
    assert_eq!(all[1].dev_eui, "70B3D57ED0000002");
    assert!(all[1].confirmed && all[1].payload == b"b" && all[1].fport == 2);
    assert_eq!(
        db.reg.downlinks(None, a).unwrap().len(),
        2,
        "only ids above `after`"
    );
    let lower = DEV_EUI.to_lowercase();
    assert_eq!(db.reg.downlinks(Some(&lower), 0).unwrap().len(), 2);

    assert_eq!(db.reg.clear_downlinks(DEV_EUI, Some(a)).unwrap(), 1);
    assert_eq!(db.reg.clear_downlinks(DEV_EUI, Some(a)).unwrap(), 0);
    assert!(matches!(
        db.reg.clear_downlinks("70B3D57ED00000FF", None),
        Err(RegistryError::NotFound(_))
    ));
    db.reg.remove(DEV_EUI).unwrap();
    let left = db.reg.downlinks(None, 0).unwrap();
    assert_eq!(left.iter().map(|d| d.id).collect::<Vec<_>>(), [b]);
    // Ids are never reused, even after deletes.
    db.reg.add(req(&otaa_fields(DEV_EUI))).unwrap();
    assert!(db.reg.enqueue_downlink(DEV_EUI, 1, b"d", false).unwrap() > c);
}

#[test]
fn a_version_1_database_is_migrated_and_keeps_its_devices() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lorawan.db");
    {
        let reg = LoraRegistry::open(&path).unwrap();
        reg.add(req(&otaa_fields(DEV_EUI))).unwrap();
    }
    {
        // Back to what version 1 had.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE downlinks; PRAGMA user_version = 1;")
            .unwrap();
    }
    let reg = LoraRegistry::open(&path).unwrap();
    assert_eq!(reg.list().unwrap().len(), 1);
    reg.enqueue_downlink(DEV_EUI, 1, b"a", false).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}
