//! The durable per-driver key/value store behind the `state` import.
//!
//! kubelet passes no options to `detach`, `unmount` and `unmountdevice`, so a
//! driver that needs backend identity then must have remembered it itself
//! (kubernetes/kubernetes#44737). This store is where.
//!
//! Threat model and guarantees:
//! - Keys never name files: each entry lives in a file named by the SHA-256
//!   of its key, with the key stored inside. A key like `../../etc/passwd`
//!   is just a string.
//! - Writes are atomic (temp file, fsync, rename, fsync of the directory):
//!   a crash at any point leaves the old value or the new one.
//! - The driver runs concurrently with itself; writers hold an exclusive
//!   `flock` on `.lock`, readers a shared one, so no update is lost.
//! - A size quota bounds what a plugin can store.

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const MAX_KEY_BYTES: usize = 256;
/// Default quota of one driver's store.
pub const DEFAULT_QUOTA_BYTES: u64 = 16 * 1024 * 1024;
const MAGIC: &[u8; 6] = b"FWKV1\n";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state key is {0}; keys must be 1 to 256 bytes")]
    InvalidKey(String),
    #[error("state quota exceeded: storing this value would use {needed} bytes of {quota} allowed")]
    Quota { needed: u64, quota: u64 },
    #[error("state store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state store entry {0} is damaged")]
    Damaged(PathBuf),
}

type Result<T> = std::result::Result<T, StateError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct StateStore {
    dir: PathBuf,
    quota: u64,
}

impl StateStore {
    /// Open (creating it 0700 if needed) the store in `dir`.
    pub fn open(dir: &Path, quota: u64) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
            quota,
        })
    }

    fn lock(&self, exclusive: bool) -> Result<Flock<File>> {
        let path = self.dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, arg).map_err(|(_, errno)| StateError::Io {
            path,
            source: errno.into(),
        })
    }

    fn check_key(key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(StateError::InvalidKey("empty".into()));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(StateError::InvalidKey(format!("{} bytes long", key.len())));
        }
        Ok(())
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        let digest = Sha256::digest(key.as_bytes());
        let mut name = String::with_capacity(64);
        for b in digest {
            name.push_str(&format!("{b:02x}"));
        }
        self.dir.join(name)
    }

    fn read_entry(path: &Path) -> Result<Option<(String, Vec<u8>)>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path)(e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(path))?;
        let damaged = || StateError::Damaged(path.to_path_buf());
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(damaged)?;
        if rest.len() < 4 {
            return Err(damaged());
        }
        let key_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let rest = &rest[4..];
        if key_len > rest.len() || key_len > MAX_KEY_BYTES {
            return Err(damaged());
        }
        let key = String::from_utf8(rest[..key_len].to_vec()).map_err(|_| damaged())?;
        Ok(Some((key, rest[key_len..].to_vec())))
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Self::check_key(key)?;
        let _lock = self.lock(false)?;
        match Self::read_entry(&self.entry_path(key))? {
            // A different key with the same SHA-256 cannot happen in practice;
            // checking keeps a damaged or planted file from answering.
            Some((stored, value)) if stored == key => Ok(Some(value)),
            _ => Ok(None),
        }
    }

    /// Bytes used by entries other than `except`; the caller holds the
    /// exclusive lock.
    fn used_bytes(&self, except: &Path) -> Result<u64> {
        let mut total = 0;
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            // A writer killed mid-write leaves its temp file; we hold the
            // exclusive lock, so no live writer owns one now.
            if name.as_encoded_bytes().starts_with(b".tmp-") {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            if name.as_encoded_bytes().starts_with(b".") || entry.path() == except {
                continue;
            }
            total += entry.metadata().map_err(io_err(&entry.path()))?.len();
        }
        Ok(total)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        Self::check_key(key)?;
        let _lock = self.lock(true)?;
        self.write_locked(key, value)
    }

    /// Set `key` to `new` (None: delete) if its value is `expected` (None:
    /// absent); true if it did. One exclusive lock covers read and write.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        Self::check_key(key)?;
        let _lock = self.lock(true)?;
        let path = self.entry_path(key);
        let current = match Self::read_entry(&path)? {
            Some((stored, value)) if stored == key => Some(value),
            _ => None,
        };
        if current.as_deref() != expected {
            return Ok(false);
        }
        match new {
            Some(v) => self.write_locked(key, v)?,
            None => self.remove_locked(&path)?,
        }
        Ok(true)
    }

    /// Write one entry; the caller holds the exclusive lock.
    fn write_locked(&self, key: &str, value: &[u8]) -> Result<()> {
        let path = self.entry_path(key);
        let mut record = Vec::with_capacity(MAGIC.len() + 4 + key.len() + value.len());
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(&(key.len() as u32).to_le_bytes());
        record.extend_from_slice(key.as_bytes());
        record.extend_from_slice(value);
        let needed = self.used_bytes(&path)? + record.len() as u64;
        if needed > self.quota {
            return Err(StateError::Quota {
                needed,
                quota: self.quota,
            });
        }
        let tmp = self.dir.join(format!(".tmp-{}", std::process::id()));
        {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            file.write_all(&record).map_err(io_err(&tmp))?;
            file.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.sync_dir()
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        Self::check_key(key)?;
        let path = self.entry_path(key);
        let _lock = self.lock(true)?;
        self.remove_locked(&path)
    }

    fn remove_locked(&self, path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    pub fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let _lock = self.lock(false)?;
        let mut keys = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            if let Some((key, _)) = Self::read_entry(&entry.path())?
                && key.starts_with(prefix)
            {
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flexwasm-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn round_trip_and_hostile_keys() {
        let dir = temp_dir("rt");
        let store = StateStore::open(&dir, DEFAULT_QUOTA_BYTES).unwrap();
        assert_eq!(store.get("a").unwrap(), None);
        store.set("volume/pv1", b"img1").unwrap();
        store.set("../../etc/passwd", b"x").unwrap();
        assert_eq!(store.get("volume/pv1").unwrap().unwrap(), b"img1");
        assert_eq!(store.get("../../etc/passwd").unwrap().unwrap(), b"x");
        // Every file stays inside the store, named by a hash.
        for e in fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(name == ".lock" || name.len() == 64, "{name}");
        }
        assert_eq!(store.list_keys("volume/").unwrap(), vec!["volume/pv1"]);
        assert!(
            !store
                .compare_and_swap("volume/pv1", Some(b"nope"), Some(b"x"))
                .unwrap()
        );
        assert!(
            store
                .compare_and_swap("volume/pv1", Some(b"img1"), Some(b"img2"))
                .unwrap()
        );
        assert!(store.compare_and_swap("fresh", None, Some(b"1")).unwrap());
        assert!(!store.compare_and_swap("fresh", None, Some(b"2")).unwrap());
        assert!(store.compare_and_swap("fresh", Some(b"1"), None).unwrap());
        assert_eq!(store.get("fresh").unwrap(), None);
        store.delete("volume/pv1").unwrap();
        store.delete("volume/pv1").unwrap();
        assert_eq!(store.get("volume/pv1").unwrap(), None);
        assert!(matches!(store.set("", b""), Err(StateError::InvalidKey(_))));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn quota_is_enforced() {
        let dir = temp_dir("quota");
        let store = StateStore::open(&dir, 100).unwrap();
        store.set("k", &[0; 50]).unwrap();
        assert!(matches!(
            store.set("k2", &[0; 50]),
            Err(StateError::Quota { .. })
        ));
        // Overwriting a key does not count its old value twice.
        store.set("k", &[1; 60]).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }
}
