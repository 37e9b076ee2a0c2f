//! The host functions the typed modules ([`log`](crate::log),
//! [`state`](crate::state), [`config`](crate::config),
//! [`devices`](crate::devices), [`loop_images`](crate::loop_images)) call.
//!
//! In a plugin (wasm32) they are the generated WIT imports. Anywhere else
//! the imports do not exist (the generated functions only panic with
//! "entered unreachable code"), so a native `cargo test` of plugin code gets
//! the in-memory stand-ins of [`crate::testing`] instead, with the same
//! signatures and the same error types.

#[cfg(target_arch = "wasm32")]
pub(crate) use crate::bindings::flexwasm::driver::{config, devices, log, loop_, state};
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::stand_ins::{config, devices, log, loop_, state};
