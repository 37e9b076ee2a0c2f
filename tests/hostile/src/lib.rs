//! Hostile flexwasm plugins, one per attack on the host, in `examples/`.
//!
//! Each example is a small component that tries one thing a plugin must
//! not get away with (run forever, eat memory, flood its output, escape its
//! state or image directory, mount what is not a block device, format a
//! device holding data, use an import it was not granted, …). The test of
//! the same name in `tests/hostile.rs` installs it with a grant policy,
//! calls it exactly as kubelet does, and checks the answer and that
//! nothing happened on the host.
//!
//! Build them all as components:
//! `cargo build --release --target wasm32-wasip2 -p flexwasm-hostile --examples`.
//! `host/build.rs` generates `foreach_hostile!` from `examples/*.rs`, so an
//! attack without a test does not compile.
//!
//! Every example starts with `#![cfg(target_arch = "wasm32")]`: they are
//! components and nothing else. `cargo test --workspace` builds all
//! examples for the host too, where wit-bindgen's export names (such as
//! `cabi_post_flexwasm:driver/driver@0.1.0#attach`) cannot be linked into
//! a native `cdylib`; there they compile to empty libraries.
