//! flexwasm: a Kubernetes FlexVolume driver host whose storage logic is a
//! sandboxed WebAssembly component.
//!
//! Data flows one way: argv ([`contract`]) → typed call → plugin
//! ([`runtime`]) → typed plan → host validation ([`driver_call`]) → node
//! operation ([`node`]) → status JSON ([`contract::DriverStatus`]).

pub mod admin;
pub mod bindings;
pub mod calllog;
pub mod capabilities;
pub mod contract;
pub mod device_claim;
pub mod device_mounts;
pub mod digest;
pub mod doctor;
pub mod driver_call;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod install;
pub mod kubelet_options;
pub mod kubelet_paths;
pub mod layout;
pub mod logview;
pub mod memory;
pub mod node;
pub mod options;
pub mod plugin_dir;
pub mod policy;
pub mod precompiled;
pub mod runtime;
pub mod scaffold;
pub mod secrets;
pub mod state;
pub mod supervisor;
pub mod test_skip;
pub mod trust;
pub mod volume_lock;
