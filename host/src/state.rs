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
//! - A quota bounds the store's real disk use, not the bytes a plugin
//!   hands over: each entry is a file, so it is charged what it takes on
//!   disk — its data blocks (at least one filesystem block, however short
//!   the value) plus [`ENTRY_OVERHEAD_BYTES`] for its inode and directory
//!   entry. Temp files a killed writer left and that cannot be removed are
//!   charged too. So `du` of the store stays within the quota, plus one
//!   block for the store directory itself, plus, while a write is in
//!   flight, the entry it replaces (old and new exist side by side until
//!   the rename).
//! - A write never takes the filesystem below its reserve
//!   ([`space`]): max(64 MiB, 10 %) available and 5 % of its inodes free,
//!   kubelet's eviction thresholds.

pub mod space;

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use space::{FsSpace, LowSpace, human_bytes};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const MAX_KEY_BYTES: usize = 256;
/// What one entry costs beyond its data blocks: its inode and its directory
/// entry. Measured per entry with `df` over 3000-5000 entries of 0 to 10000
/// bytes: ext4 ~100 bytes (directory blocks; its inodes are preallocated),
/// xfs ~610 (a 512-byte inode and directory blocks), btrfs up to ~1490
/// (inode, directory and extent items, metadata duplicated). Half a block
/// covers them all.
pub const ENTRY_OVERHEAD_BYTES: u64 = 2048;
const MAGIC: &[u8; 6] = b"FWKV1\n";
const TEMP_PREFIX: &str = ".tmp-";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state key is {0}; keys must be 1 to 256 bytes")]
    InvalidKey(String),
    #[error(
        "storing this value would bring the state store to {} on disk, over its quota of {} ({entries} entries; each costs its disk blocks, at least one {}-byte block \
         however short the value, plus {ENTRY_OVERHEAD_BYTES} bytes for its inode and directory \
         entry); delete keys no longer needed, or raise [state] quota_kib in the driver's policy",
        human_bytes(*.needed),
        human_bytes(*.quota),
        .block
    )]
    Quota {
        needed: u64,
        quota: u64,
        /// Entries the store would hold.
        entries: u64,
        block: u64,
    },
    #[error("no room for this value: {0}")]
    LowSpace(#[from] LowSpace),
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

/// What an entry of `len` bytes, `blocks` 512-byte sectors allocated,
/// costs on disk: its data blocks — never less than `len` rounded up to
/// whole filesystem blocks, so a value the filesystem keeps inside the inode
/// (ext4 inline data, btrfs inline extents: `st_blocks` 0) still counts a
/// block — plus its inode and directory entry.
pub fn entry_cost(len: u64, blocks: u64, space: &FsSpace) -> u64 {
    blocks
        .saturating_mul(512)
        .max(space.blocks_for(len))
        .saturating_add(ENTRY_OVERHEAD_BYTES)
}

/// The store's disk use, as [`entry_cost`]s.
#[derive(Debug, Default)]
struct Usage {
    /// Every entry but the one a write replaces, and leftover temp files.
    others: u64,
    entries: u64,
    /// The entry a write replaces; 0 if the key is new.
    replaced: u64,
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

    /// What the store takes on disk, apart from the entry at `replaced`;
    /// the caller holds the exclusive lock.
    fn usage(&self, replaced: &Path, space: &FsSpace) -> Result<Usage> {
        let mut usage = Usage::default();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            let path = entry.path();
            if name.starts_with(TEMP_PREFIX.as_bytes()) {
                // A writer killed mid-write left it; we hold the exclusive
                // lock, so no live writer owns one now. What cannot be
                // removed still takes space: charge it.
                if fs::remove_file(&path).is_ok() {
                    continue;
                }
            } else if name.starts_with(b".") {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Removed between readdir and stat (not by a writer: we hold
                // the lock, but e.g. by an operator cleaning up).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            let cost = entry_cost(meta.len(), meta.blocks(), space);
            if path == replaced {
                usage.replaced = cost;
            } else {
                usage.others += cost;
                usage.entries += 1;
            }
        }
        Ok(usage)
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
        let space = FsSpace::of(&self.dir).map_err(io_err(&self.dir))?;
        let usage = self.usage(&path, &space)?;
        let cost = entry_cost(record.len() as u64, 0, &space);
        let needed = usage.others.saturating_add(cost);
        if needed > self.quota {
            return Err(StateError::Quota {
                needed,
                quota: self.quota,
                entries: usage.entries + 1,
                block: space.block_size,
            });
        }
        // Only what the write adds can take the filesystem below its
        // reserve: rewriting a value no longer than the old one never does.
        let growth = cost.saturating_sub(usage.replaced);
        if growth > 0 {
            space.check(growth, u64::from(usage.replaced == 0))?;
        }
        let tmp = self
            .dir
            .join(format!("{TEMP_PREFIX}{}", std::process::id()));
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
        let store = StateStore::open(&dir, 1 << 20).unwrap();
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

    /// The cost of one entry with a value of `len` bytes under key `key`,
    /// on the filesystem of `dir`.
    fn cost_of(dir: &Path, key: &str, len: usize) -> u64 {
        let space = FsSpace::of(dir).unwrap();
        entry_cost((MAGIC.len() + 4 + key.len() + len) as u64, 0, &space)
    }

    #[test]
    fn quota_counts_disk_blocks_not_value_bytes() {
        let dir = temp_dir("quota");
        fs::create_dir_all(&dir).unwrap();
        let one = cost_of(&dir, "k0", 0);
        let space = FsSpace::of(&dir).unwrap();
        assert_eq!(one, space.block_size + ENTRY_OVERHEAD_BYTES);
        // Room for three entries and half a block: the fourth empty value,
        // 64 bytes of records in all, no longer fits.
        let store = StateStore::open(&dir, 3 * one + space.block_size / 2).unwrap();
        for k in ["k0", "k1", "k2"] {
            store.set(k, b"").unwrap();
        }
        match store.set("k3", b"") {
            Err(StateError::Quota {
                needed, entries, ..
            }) => {
                assert_eq!((needed, entries), (4 * one, 4));
            }
            other => panic!("a fourth empty value: {other:?}"),
        }
        // Overwriting a key does not count its old value twice.
        store.set("k1", &[1; 60]).unwrap();
        assert_eq!(store.get("k1").unwrap().unwrap(), [1; 60]);
        // A value that needs a second block costs it.
        let two_blocks = vec![7u8; space.block_size as usize + 1];
        assert!(matches!(
            store.set("k2", &two_blocks),
            Err(StateError::Quota { .. })
        ));
        let e = store.set("k3", b"").unwrap_err().to_string();
        for part in ["on disk", "quota", "4 entries", "quota_kib"] {
            assert!(e.contains(part), "{e:?} lacks {part:?}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn leftover_temp_files_are_removed_or_charged() {
        let dir = temp_dir("temp");
        fs::create_dir_all(&dir).unwrap();
        let one = cost_of(&dir, "k0", 0);
        let store = StateStore::open(&dir, 2 * one).unwrap();
        // A killed writer's temp file: removed by the next write.
        fs::write(dir.join(".tmp-999999"), vec![0u8; 100_000]).unwrap();
        store.set("k0", b"").unwrap();
        assert!(!dir.join(".tmp-999999").exists());
        // One that cannot be removed (here a directory) is charged.
        fs::create_dir(dir.join(".tmp-stuck")).unwrap();
        fs::write(dir.join(".tmp-stuck/x"), b"x").unwrap();
        assert!(matches!(
            store.set("k1", b""),
            Err(StateError::Quota { entries: 3, .. })
        ));
        fs::remove_dir_all(dir.join(".tmp-stuck")).unwrap();
        store.set("k1", b"").unwrap();
        let _ = fs::remove_dir_all(&dir);
    }
}
