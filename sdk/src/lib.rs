//! Write a flexwasm storage plugin in Rust.
//!
//! A flexwasm plugin is a WebAssembly component that implements the
//! `flexwasm:driver/plugin` world. The flexwasm host speaks the FlexVolume
//! protocol to kubelet, calls the plugin once per FlexVolume call, and carries
//! out what the plugin asks for — formatting and mounting *plans*, loop
//! devices, state — after checking it against what the operator granted.
//!
//! With this crate a plugin is a type implementing [`Driver`] (every method
//! has a default, implement the calls your storage needs) and one
//! [`export_driver!`] line; there is no `wit-bindgen` code to write.
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! flexwasm-sdk = { path = "../flexwasm/sdk" } # where your flexwasm checkout is
//! ```
//!
//! `src/lib.rs`, a node-only driver that mounts a tmpfs sized by the
//! volume's `size` option:
//!
//! ```no_run
//! use flexwasm_sdk::{Capabilities, Driver, FilesystemPlan, MountPlan, Options, Result, log};
//!
//! #[derive(Default)]
//! struct Scratch;
//!
//! impl Driver for Scratch {
//!     fn init(&self) -> Result<Capabilities> {
//!         Ok(Capabilities::node_only())
//!     }
//!
//!     fn mount(&self, pod_volume_dir: &str, options: &Options) -> Result<MountPlan> {
//!         let size = options.size_bytes("size")?.unwrap_or(64 << 20);
//!         log::info(format!("tmpfs of {size} bytes at {pod_volume_dir}"));
//!         Ok(FilesystemPlan::new("scratch", "tmpfs")
//!             .mount_option(format!("size={size}"))
//!             .into())
//!     }
//!
//!     fn unmount(&self, _pod_volume_dir: &str) -> Result<()> {
//!         Ok(()) // the host has unmounted it; nothing else to clean up
//!     }
//! }
//!
//! flexwasm_sdk::export_driver!(Scratch);
//! # fn main() {}
//! ```
//!
//! Build it as a component with
//! `cargo build --release --target wasm32-wasip2`; the plugin is
//! `target/wasm32-wasip2/release/<crate>.wasm`.
//!
//! # Rules a driver lives by
//!
//! - **Errors are for people.** The message of an [`Error::Failure`] shows up
//!   in `kubectl describe pod`: say what failed, on what, and what to do.
//!   [`Error::NotSupported`] makes kubelet fall back to its own behaviour.
//!   Never panic on input: a panic aborts the call with a far less useful
//!   message.
//! - **No printing.** kubelet parses the host's stdout and stderr; log with
//!   [`log`] instead.
//! - **No memory between calls.** Every call is a fresh instance; remember
//!   things with [`state`]. `detach`, `unmount-device` and `unmount` get no
//!   options, so record at `attach` / `mount-device` / `mount` time what they
//!   will need; [`mounts`] does it for the unmounts, keyed by the directory.
//! - **Idempotent and concurrent.** kubelet repeats calls, and calls for
//!   different volumes run at the same time.
//!
//! # Testing a driver natively
//!
//! Built for anything but wasm32, the host functions are in-memory
//! stand-ins, one per thread ([`testing`], native builds only): a plain
//! `cargo test` calls the driver's methods directly, and a test seeds what
//! the host would provide and looks at what the driver did.
//!
//! ```
//! # use flexwasm_sdk::prelude::*;
//! # use flexwasm_sdk::{loop_images, testing};
//! # #[derive(Default)] struct MyDriver;
//! # impl Driver for MyDriver {
//! #     fn attach(&self, o: &Options, _: &str) -> Result<String> {
//! #         let image = format!("{}.img", o.volume_name);
//! #         loop_images::create_image(&image, 1 << 30)?;
//! #         Ok(loop_images::attach(&image)?)
//! #     }
//! # }
//! // #[test]
//! // fn attach_creates_and_attaches_the_image() {
//!     testing::set_config("defaultFSType", "xfs"); // the operator's [config]
//!     let options = Options { volume_name: "pv-1".into(), ..Options::default() };
//!     assert_eq!(MyDriver.attach(&options, "node-1")?, "/dev/loop0");
//!     assert_eq!(testing::loop_images()["pv-1.img"].size_bytes, 1 << 30);
//! // }
//! # Ok::<(), flexwasm_sdk::Error>(())
//! ```
//!
//! The stand-ins keep the host's rules and messages where a driver can get
//! them wrong (state keys and quota, loop image names and limits); what
//! they leave out is listed in [`testing`].
//!
//! # Host functions and grants
//!
//! The modules [`log`], [`state`], [`loop_images`], [`devices`], [`config`]
//! and [`http`] call the host. A component imports only the host interfaces
//! whose functions it actually calls, and the host refuses a plugin that
//! imports an interface its operator did not grant: use only what the
//! plugin needs.
//!
//! # Talking to a storage backend
//!
//! A driver for a cloud or array backend reads its endpoint and credentials
//! from [`config`] (the `[config]` table of the operator's grant policy) and
//! calls the backend's REST API with [`http`], a small blocking client over
//! `wasi:http`; the host sends requests only to the origins the policy's
//! `[http]` table allows.
//!
//! ```no_run
//! use flexwasm_sdk::prelude::*;
//! use flexwasm_sdk::{config, http};
//! use std::time::Duration;
//!
//! #[derive(Default)]
//! struct Array;
//!
//! impl Driver for Array {
//!     fn expand_volume(&self, options: &Options, _: &str, new_size: u64, _: u64) -> Result<()> {
//!         let endpoint = config::require("endpoint")?; // e.g. https://array.example.com:8443
//!         let token = config::require_secret("token")?; // an operator secret: never log it
//!         http::Request::post(format!("{endpoint}/api/v1/volumes/{}/resize", options.volume_name))
//!             .bearer(token.expose())
//!             .json(flexwasm_sdk::serde_json::json!({ "size_bytes": new_size }))
//!             .timeout(Duration::from_secs(10))
//!             .send()?
//!             .error_for_status()?;
//!         Ok(())
//!     }
//! }
//!
//! flexwasm_sdk::export_driver!(Array);
//! # fn main() {}
//! ```
//!
//! `plugins/rest-array` in the flexwasm repository is a complete driver of
//! this kind, with the grant policy it needs.

/// The raw bindings generated from the WIT package, for what the typed API
/// does not cover (e.g. matching on a `loop-error` variant).
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        // Plugins export through `export_driver!`, which expands this macro
        // in the plugin crate, so it must be public and find the generated
        // types through `$crate`.
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "$crate::bindings",
        // Lets drivers and their tests compare plans, locators and options.
        additional_derives: [PartialEq, Eq],
    });
}

pub mod config;
pub mod devices;
mod driver;
mod error;
pub mod http;
mod imports;
pub mod log;
pub mod loop_images;
#[cfg(feature = "json")]
pub mod mounts;
mod options;
mod plans;
mod size;
pub mod state;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[doc(hidden)]
pub use driver::Adapter;
pub use driver::Driver;
pub use error::{Error, Result};
#[doc(inline)]
pub use options::{Options, PodInfo};
#[doc(inline)]
pub use plans::{BlockPlan, Capabilities, DeviceLocator, FilesystemPlan, MountPlan};
pub use size::parse_size;

/// The `serde_json` crate the [`http`] module uses (`json` feature), for
/// `serde_json::json!` bodies and `serde_json::Value` responses without a
/// dependency of your own.
#[cfg(feature = "json")]
pub use serde_json;

/// Everything a typical driver uses: `use flexwasm_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        BlockPlan, Capabilities, DeviceLocator, Driver, Error, FilesystemPlan, MountPlan, Options,
        Result, export_driver, fail,
    };
}
