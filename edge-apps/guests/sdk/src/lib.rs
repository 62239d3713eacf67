//! SDK for gatewayd edge apps: WebAssembly components for the
//! `gatewayd:edge/edge-app` world (`edge-apps/wit/edge.wit`).
//!
//! `no_std` + `alloc`: an app is a `cdylib` built for
//! `wasm32-unknown-unknown` (see `edge-apps/build-guests.sh`) that implements
//! [`App`] and calls [`export_app!`]:
//!
//! ```ignore
//! #![no_std]
//! extern crate alloc;
//! use alloc::{string::String, vec::Vec};
//! use gatewayd_edge_sdk::{export_app, App, Config, Output, Reading, Window};
//!
//! struct Observer;
//! impl App for Observer {
//!     fn init(_config: &Config) -> Result<Self, String> { Ok(Observer) }
//!     fn process(&mut self, _readings: Vec<Reading>, _window: Option<Window>) -> Result<Output, String> {
//!         Ok(Output::pass_all())
//!     }
//! }
//! export_app!(Observer);
//! ```
//!
//! On wasm32 the SDK also provides the global allocator (`dlmalloc`) and the
//! panic handler (logs the message at `error`, then executes `unreachable`,
//! which the host sees as a trap).
#![cfg_attr(not(test), no_std)]

extern crate alloc;
// Lets the generated bindings name this crate the same way from inside it and
// from the app crates that expand `export_app!`.
extern crate self as gatewayd_edge_sdk;

pub mod config;
pub mod host;
mod types;

pub use config::{Config, JsonValue};
pub use host::{kv, ml};
pub use types::*;

/// The generated bindings (wit-bindgen). Prefer the re-exports at the crate
/// root; this is public for the [`export_app!`] macro.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "edge-app",
        path: "../../wit",
        runtime_path: "::gatewayd_edge_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__export_edge_app",
        default_bindings_module: "::gatewayd_edge_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

/// An edge app. One instance lives per component instance: [`App::init`]
/// creates it from the manifest's `[config]`, [`App::process`] is called for
/// every stream batch or closed window.
pub trait App: Sized {
    /// Called once per instance start. An error disables the app.
    fn init(config: &Config) -> Result<Self, String>;
    /// Stream delivery: `window` is `None`, `readings` are one ingest batch.
    /// Window delivery: `readings` are a closed window's. An error counts as
    /// a failed call (the manifest's `on_failure` decides what happens).
    fn process(&mut self, readings: Vec<Reading>, window: Option<Window>)
        -> Result<Output, String>;
}

/// Exports `$app` (a type implementing [`App`]) as the component's `init`
/// and `process`. Invoke once, in the app's `cdylib` crate.
#[macro_export]
macro_rules! export_app {
    ($app:ty) => {
        const _: () = {
            static __GATEWAYD_EDGE_APP: $crate::__private::AppCell<$app> =
                $crate::__private::AppCell::new();

            struct __GatewaydEdgeExport;

            impl $crate::bindings::Guest for __GatewaydEdgeExport {
                fn init(
                    config: $crate::__private::String,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    $crate::__private::init(&__GATEWAYD_EDGE_APP, &config)
                }

                fn process(
                    readings: $crate::__private::Vec<$crate::Reading>,
                    window: ::core::option::Option<$crate::Window>,
                ) -> ::core::result::Result<$crate::Output, $crate::__private::String> {
                    $crate::__private::process(&__GATEWAYD_EDGE_APP, readings, window)
                }
            }

            $crate::bindings::__export_edge_app!(
                __GatewaydEdgeExport with_types_in $crate::bindings
            );
        };
    };
}

use alloc::{string::String, vec::Vec};

/// Implementation details of [`export_app!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use alloc::fmt::format;
    pub use alloc::{string::String, vec::Vec};
    pub use wit_bindgen;

    use crate::{App, Config, Output, Reading, Window};
    use core::cell::RefCell;

    /// Holds the app instance between calls.
    pub struct AppCell<T>(RefCell<Option<T>>);

    // SAFETY: a component instance is single-threaded: wasm32-unknown-unknown
    // is built without the `atomics` feature (no shared memory, no threads),
    // and the component model forbids re-entering an instance while one of
    // its exports runs. The `RefCell` still checks at run time: a second
    // borrow would panic, i.e. trap, never alias.
    unsafe impl<T> Sync for AppCell<T> {}

    impl<T> AppCell<T> {
        pub const fn new() -> Self {
            AppCell(RefCell::new(None))
        }
    }

    impl<T> Default for AppCell<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    pub fn init<T: App>(cell: &AppCell<T>, config: &str) -> Result<(), String> {
        let config = Config::parse(config).map_err(|e| alloc::format!("config: {e}"))?;
        let app = T::init(&config)?;
        *cell.0.borrow_mut() = Some(app);
        Ok(())
    }

    pub fn process<T: App>(
        cell: &AppCell<T>,
        readings: Vec<Reading>,
        window: Option<Window>,
    ) -> Result<Output, String> {
        match cell.0.borrow_mut().as_mut() {
            Some(app) => app.process(readings, window),
            None => Err(String::from("process called before a successful init")),
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod wasm_rt {
    use core::fmt::Write;
    use core::sync::atomic::{AtomicBool, Ordering};

    #[global_allocator]
    static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

    /// Formats into a fixed buffer: the panic may be an allocation failure.
    struct Buf {
        bytes: [u8; 256],
        len: usize,
    }

    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for c in s.chars() {
                let mut tmp = [0u8; 4];
                let enc = c.encode_utf8(&mut tmp).as_bytes();
                if self.len + enc.len() > self.bytes.len() {
                    return Err(core::fmt::Error);
                }
                self.bytes[self.len..self.len + enc.len()].copy_from_slice(enc);
                self.len += enc.len();
            }
            Ok(())
        }
    }

    static PANICKING: AtomicBool = AtomicBool::new(false);

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        // A nested panic (e.g. inside `log`) traps right away.
        let nested = PANICKING.swap(true, Ordering::Relaxed);
        if !nested {
            let mut buf = Buf {
                bytes: [0; 256],
                len: 0,
            };
            let _ = write!(buf, "panic: {}", info.message());
            if let Some(loc) = info.location() {
                let _ = write!(buf, " at {}:{}", loc.file(), loc.line());
            }
            // `Buf` only ever holds whole UTF-8 characters.
            if let Ok(msg) = core::str::from_utf8(&buf.bytes[..buf.len]) {
                crate::host::log(crate::Level::Error, msg);
            }
        }
        core::arch::wasm32::unreachable()
    }
}
