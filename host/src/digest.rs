//! The content digest the host records and compares: a plugin's SHA-256
//! (its grant's pin, the precompiled key), a volume's identity, the name of
//! a device mount's record. Below every user, so none of them depends on
//! another for it.

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}
