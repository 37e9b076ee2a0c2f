//! Remembering at `mount` what `unmount` will need.
//!
//! kubelet calls `unmount <podVolDir>` and `unmountdevice <deviceMountPath>`
//! with the directory and nothing else: no options, no volume name, no
//! secret (kubernetes/kubernetes#44737). A driver that has anything to undo
//! at unmount — release a backend lease, delete a scratch image, log which
//! volume left — must have written down at `mount` (or `mountdevice`) what
//! it will need, keyed by that directory, and must find it again from the
//! directory alone. Every call is a fresh instance, so that record lives in
//! the [`state`] store; this module keeps it there, one entry
//! per directory, as JSON.
//!
//! ```no_run
//! use flexwasm_sdk::prelude::*;
//! use flexwasm_sdk::{log, mounts};
//! use serde::{Deserialize, Serialize};
//!
//! /// What `unmount` needs to know about a mount.
//! #[derive(Serialize, Deserialize)]
//! struct Mounted {
//!     volume: String,
//!     pod_uid: String,
//! }
//!
//! #[derive(Default)]
//! struct Scratch;
//!
//! impl Driver for Scratch {
//!     fn mount(&self, pod_volume_dir: &str, options: &Options) -> Result<MountPlan> {
//!         // First, before anything exists that would need undoing: if the
//!         // record cannot be written (a full store), the mount fails clean.
//!         mounts::remember(pod_volume_dir, &Mounted {
//!             volume: options.volume_name.clone(),
//!             pod_uid: options.pod.as_ref().map(|p| p.uid.clone()).unwrap_or_default(),
//!         })?;
//!         Ok(FilesystemPlan::new("scratch", "tmpfs").mount_option("size=64m").into())
//!     }
//!
//!     fn unmount(&self, pod_volume_dir: &str) -> Result<()> {
//!         // kubelet repeats unmount, and a mount may have failed before it
//!         // remembered anything: no record is not an error.
//!         let Some(mounted) = mounts::recall::<Mounted>(pod_volume_dir)? else {
//!             log::info(format!("nothing remembered for {pod_volume_dir}"));
//!             return Ok(());
//!         };
//!         log::info(format!("volume {} left pod {}", mounted.volume, mounted.pod_uid));
//!         // Undo what needs undoing, then forget last: if undoing fails,
//!         // kubelet retries the unmount and the record is still there.
//!         mounts::forget(pod_volume_dir)
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! The rules this follows:
//!
//! - **Remember first, forget last.** Write the record before returning
//!   the plan (the host mounts only after the plugin answered), and delete
//!   it only once everything it was kept for is undone.
//! - **Idempotent.** Remembering again replaces the record; forgetting what
//!   is not remembered is fine; `recall` of an unknown directory is `None`.
//! - **Bounded.** Each record is a state entry, charged at least one disk
//!   block plus 2 KiB against the driver's `[state] quota_kib` (4096 by
//!   default: about 680 records); a driver that never forgets fills its
//!   store. [`dirs`] lists what is remembered, for finding leftovers.
//!
//! Keys: `flexwasm-sdk/mounts/<dir>`, or, for a directory too long for a
//! state key (256 bytes), `flexwasm-sdk/mounts/#<hash of dir>`; the record
//! holds its directory either way and is only returned for that directory.
//! The `json` feature (on by default) provides this module.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{Error, Result, state};

/// Every key this module writes starts with this.
pub const KEY_PREFIX: &str = "flexwasm-sdk/mounts/";

/// The longest state key the host takes.
const MAX_KEY_BYTES: usize = 256;

/// Records what `unmount` (or `unmountdevice`) of `dir` will need,
/// replacing any earlier record for `dir`.
pub fn remember<T: Serialize + ?Sized>(dir: &str, what: &T) -> Result<()> {
    check_dir(dir)?;
    let value = serde_json::to_value(what).map_err(|error| {
        Error::Failure(format!(
            "cannot record what unmounting {dir} will need: {error}"
        ))
    })?;
    let key = key(dir);
    if let Some(other) = stored_dir(&key)?.filter(|stored| stored != dir) {
        // Two directories whose 128-bit hashes agree: never seen, but
        // never overwrite another mount's record.
        return Err(Error::Failure(format!(
            "cannot record the mount at {dir}: its state key is taken by the mount at {other}"
        )));
    }
    let record = json!({ "dir": dir, "value": value });
    state::set(&key, record.to_string())
}

/// What [`remember`] recorded for `dir`; `None` if nothing is (never
/// mounted, or forgotten already). A record that does not read as `T` (the
/// driver changed its type since) is a [`Failure`](Error::Failure) naming
/// the directory.
pub fn recall<T: DeserializeOwned>(dir: &str) -> Result<Option<T>> {
    check_dir(dir)?;
    let Some((stored, value)) = read(&key(dir))? else {
        return Ok(None);
    };
    if stored != dir {
        return Ok(None);
    }
    serde_json::from_value(value).map(Some).map_err(|error| {
        Error::Failure(format!(
            "the record of the mount at {dir} does not read as what this driver expects \
             ({error}); was it written by another version of the driver?"
        ))
    })
}

/// Deletes the record for `dir`; fine if there is none.
pub fn forget(dir: &str) -> Result<()> {
    check_dir(dir)?;
    let key = key(dir);
    match stored_dir(&key)? {
        Some(stored) if stored == dir => state::delete(&key),
        _ => Ok(()),
    }
}

/// Every directory with a record, sorted: mounts not unmounted yet, or
/// records a driver failed to forget.
pub fn dirs() -> Result<Vec<String>> {
    let mut dirs = Vec::new();
    for key in state::list_keys(KEY_PREFIX)? {
        if let Some(dir) = stored_dir(&key)? {
            dirs.push(dir);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn check_dir(dir: &str) -> Result<()> {
    if dir.is_empty() {
        return Err(Error::Failure(
            "cannot record a mount without its directory (the path is empty)".to_owned(),
        ));
    }
    Ok(())
}

/// The state key of `dir`'s record.
fn key(dir: &str) -> String {
    let direct = format!("{KEY_PREFIX}{dir}");
    if direct.len() <= MAX_KEY_BYTES {
        return direct;
    }
    // kubelet's paths start with `/`, so `#` keys never meet direct ones.
    format!("{KEY_PREFIX}#{:016x}{:016x}", fnv1a(dir, 0), fnv1a(dir, 1))
}

/// 64-bit FNV-1a of `text`, the stream prefixed by `seed` so that two
/// seeds give two independent halves of a 128-bit name. Not cryptographic,
/// and need not be: the record names its directory and is checked.
fn fnv1a(text: &str, seed: u8) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in std::iter::once(seed).chain(text.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The directory and value of the record at `key`.
fn read(key: &str) -> Result<Option<(String, Value)>> {
    let Some(text) = state::get_string(key)? else {
        return Ok(None);
    };
    let damaged = || {
        Error::Failure(format!(
            "state entry {key:?} is not a mount record written by flexwasm_sdk::mounts"
        ))
    };
    let mut record: Value = serde_json::from_str(&text).map_err(|_| damaged())?;
    let dir = record
        .get("dir")
        .and_then(Value::as_str)
        .ok_or_else(damaged)?
        .to_owned();
    let value = record
        .get_mut("value")
        .map(Value::take)
        .ok_or_else(damaged)?;
    Ok(Some((dir, value)))
}

fn stored_dir(key: &str) -> Result<Option<String>> {
    Ok(read(key)?.map(|(dir, _)| dir))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::testing;
    use serde_json::json;

    const POD_DIR: &str =
        "/var/lib/kubelet/pods/5d1c3a52-0d8e-4f4b-9a51-1e2f3a4b5c6d/volumes/acme~scratch/data";

    #[test]
    fn remembers_recalls_and_forgets_by_dir() {
        remember(POD_DIR, &json!({ "volume": "pv-1", "pod": "web-0" })).unwrap();
        let recalled: Value = recall(POD_DIR).unwrap().unwrap();
        assert_eq!(recalled["volume"], "pv-1");
        assert_eq!(recall::<Value>("/elsewhere").unwrap(), None);
        assert_eq!(dirs().unwrap(), [POD_DIR]);
        // One state entry, readable, under the documented key.
        let entries = testing::state_entries();
        assert_eq!(
            entries.keys().collect::<Vec<_>>(),
            [&format!("{KEY_PREFIX}{POD_DIR}")]
        );
        forget(POD_DIR).unwrap();
        forget(POD_DIR).unwrap();
        assert_eq!(recall::<Value>(POD_DIR).unwrap(), None);
        assert!(testing::state_entries().is_empty());
    }

    #[test]
    fn remembering_again_replaces_the_record() {
        remember(POD_DIR, "first").unwrap();
        remember(POD_DIR, "second").unwrap();
        assert_eq!(
            recall::<String>(POD_DIR).unwrap().as_deref(),
            Some("second")
        );
        assert_eq!(testing::state_entries().len(), 1);
    }

    #[test]
    fn dirs_too_long_for_a_key_are_hashed_and_still_checked() {
        let long = format!(
            "/var/lib/kubelet/pods/{}/volumes/acme~scratch/v",
            "x".repeat(300)
        );
        let other = format!("{long}2");
        remember(&long, &7u32).unwrap();
        remember(&other, &8u32).unwrap();
        assert_eq!(recall::<u32>(&long).unwrap(), Some(7));
        assert_eq!(recall::<u32>(&other).unwrap(), Some(8));
        let keys: Vec<String> = testing::state_entries().into_keys().collect();
        assert!(
            keys.iter()
                .all(|k| k.len() <= 256 && k.starts_with("flexwasm-sdk/mounts/#"))
        );
        assert_eq!(dirs().unwrap(), [long.clone(), other]);
        forget(&long).unwrap();
        assert_eq!(recall::<u32>(&long).unwrap(), None);
        assert_eq!(dirs().unwrap().len(), 1);
    }

    #[test]
    fn a_record_of_another_type_is_a_failure_naming_the_dir() {
        remember(POD_DIR, &json!({ "volume": 5 })).unwrap();
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Mounted {
            volume: String,
        }
        let error = recall::<Mounted>(POD_DIR).unwrap_err().to_string();
        assert!(
            error.contains(POD_DIR) && error.contains("another version"),
            "{error}"
        );
    }

    #[test]
    fn a_full_store_fails_remember() {
        testing::set_state_quota_kib(4);
        let error = remember(POD_DIR, "x").unwrap_err().to_string();
        assert!(error.contains("quota exceeded"), "{error}");
        assert!(remember("", "x").is_err());
    }

    #[test]
    fn other_state_keys_are_left_alone() {
        state::set("volume/pv-1", "mine").unwrap();
        state::set(&format!("{KEY_PREFIX}junk"), "not json").unwrap();
        remember(POD_DIR, "x").unwrap();
        assert!(dirs().is_err());
        state::delete(&format!("{KEY_PREFIX}junk")).unwrap();
        assert_eq!(dirs().unwrap(), [POD_DIR]);
        assert_eq!(testing::state_entries().len(), 2);
    }
}
