//! The host side of each WIT interface a plugin may import, one file per
//! interface (like wasmtime-wasi's `cli`, `clocks`, …), each linkable on its
//! own: a component gets exactly the interfaces it imports and nothing else.
//!
//! Every request is re-validated here or in [`crate::node`], whatever the
//! plugin claims: names are names (never paths), devices must be block
//! devices under `/dev`, images live in one directory, outbound HTTP goes
//! only where the grant allows.

pub mod config;
pub mod devices;
pub mod http;
pub mod log;
pub mod loop_images;
pub mod output;
pub mod state;
pub mod wasi_io;
