//! The host side of each WIT interface a plugin may import, one file per
//! interface (like wasmtime-wasi's `cli`, `clocks`, …), each linkable on its
//! own: a component gets exactly the interfaces it imports and nothing else.
//!
//! Every request is re-validated here or in [`crate::node`], whatever the
//! plugin claims: names are names (never paths), devices must be block
//! devices under `/dev`, images live in one directory, outbound HTTP goes
//! only where the grant allows.
//!
//! Dependencies run one way: the runtime links the capabilities, never the
//! reverse. Each capability implements its interface (from
//! [`crate::bindings`]) on a small state of its own — [`log::PluginLog`],
//! [`state::StateCapability`], [`loop_images::LoopImages`],
//! [`config::ConfigView`], or a view that borrows what it needs along with
//! the call's deadline ([`devices::DevicesView`], [`wasi_io::BoundedIo`]) —
//! and its `add_to_linker` takes a getter from the store's data to that
//! state; `wasi:http` asks for wasmtime-wasi-http's `WasiHttpView`, whose
//! hooks are [`http::EgressHooks`]. The runtime's store data
//! (`runtime::PluginHost`) holds the states and supplies the getters.

pub mod config;
pub mod devices;
pub mod http;
pub mod log;
pub mod loop_images;
pub mod output;
pub mod state;
pub mod wasi_io;
