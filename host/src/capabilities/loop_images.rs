//! `flexwasm:driver/loop`: file-backed loop devices, with images confined
//! to one directory.
//!
//! Threat model: the plugin names an image; it never gives a path. A name
//! is a single path component of `[A-Za-z0-9_][A-Za-z0-9._-]*` (so no `/`,
//! no `..`, no hidden files), and the directory is opened as a capability
//! (`cap-std`), so even a symlink planted in it cannot lead outside. Only
//! regular files are attached. Attach and detach hold an exclusive lock on
//! the image, so concurrent calls never attach one image twice.

use crate::node::loopdev;
use crate::runtime::PluginHost;
use crate::runtime::bindings::flexwasm::driver::loop_::{self as wit, LoopError};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use wasmtime::component::{HasSelf, Linker};

pub const MAX_NAME_BYTES: usize = 128;
/// Refuse absurd sizes early (16 TiB).
pub const MAX_IMAGE_BYTES: u64 = 16 << 40;

pub struct LoopImages {
    dir_path: PathBuf,
    dir: Option<Dir>,
}

pub fn check_name(name: &str) -> Result<(), LoopError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LoopError::InvalidName(format!(
            "image name '{}' is not allowed: use 1-128 letters, digits, '.', '_' or '-', starting with a letter, digit or '_'",
            name.chars().take(MAX_NAME_BYTES).collect::<String>()
        )))
    }
}

fn failed(what: impl std::fmt::Display) -> LoopError {
    LoopError::Failed(what.to_string())
}

impl LoopImages {
    pub fn new(dir_path: PathBuf) -> Self {
        LoopImages {
            dir_path,
            dir: None,
        }
    }

    pub fn dir_path(&self) -> &Path {
        &self.dir_path
    }

    fn dir(&mut self) -> Result<&Dir, LoopError> {
        if self.dir.is_none() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir_path)
                .map_err(|e| {
                    failed(format!(
                        "cannot create image dir {}: {e}",
                        self.dir_path.display()
                    ))
                })?;
            let dir = Dir::open_ambient_dir(&self.dir_path, ambient_authority()).map_err(|e| {
                failed(format!(
                    "cannot open image dir {}: {e}",
                    self.dir_path.display()
                ))
            })?;
            self.dir = Some(dir);
        }
        self.dir
            .as_ref()
            .ok_or_else(|| failed("image dir unavailable"))
    }

    /// Open an existing image read-write; `None` if absent.
    fn open(&mut self, name: &str) -> Result<Option<File>, LoopError> {
        check_name(name)?;
        let dir = self.dir()?;
        match dir.open_with(name, OpenOptions::new().read(true).write(true)) {
            Ok(f) => {
                let f = f.into_std();
                let meta = f
                    .metadata()
                    .map_err(|e| failed(format!("image {name}: {e}")))?;
                if !meta.file_type().is_file() {
                    return Err(failed(format!("image {name} is not a regular file")));
                }
                Ok(Some(f))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed(format!("cannot open image {name}: {e}"))),
        }
    }

    fn open_existing(&mut self, name: &str) -> Result<File, LoopError> {
        self.open(name)?
            .ok_or_else(|| LoopError::NotFound(format!("image {name} does not exist")))
    }

    fn locked(&mut self, name: &str) -> Result<Flock<File>, LoopError> {
        let file = self.open_existing(name)?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| failed(format!("cannot lock image {name}: {e}")))
    }

    /// The loop device backed by this open image, if any.
    fn device_of(file: &File) -> Result<Option<PathBuf>, LoopError> {
        let meta = file.metadata().map_err(failed)?;
        loopdev::find_by_file(meta.dev(), meta.ino()).map_err(failed)
    }
}

impl wit::Host for LoopImages {
    fn create_image(&mut self, name: String, size_bytes: u64) -> Result<u64, LoopError> {
        check_name(&name)?;
        if size_bytes == 0 || size_bytes > MAX_IMAGE_BYTES {
            return Err(failed(format!(
                "image size {size_bytes} is out of range (1 byte to 16 TiB)"
            )));
        }
        if let Some(existing) = self.open(&name)? {
            return existing.metadata().map(|m| m.len()).map_err(failed);
        }
        let dir = self.dir()?;
        let file = match dir.open_with(
            &name,
            OpenOptions::new().read(true).write(true).create_new(true),
        ) {
            Ok(f) => f.into_std(),
            // Another call created it between our two opens: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return self
                    .open_existing(&name)?
                    .metadata()
                    .map(|m| m.len())
                    .map_err(failed);
            }
            Err(e) => return Err(failed(format!("cannot create image {name}: {e}"))),
        };
        // Sparse: set_len allocates nothing.
        file.set_len(size_bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| failed(format!("cannot size image {name}: {e}")))?;
        Ok(size_bytes)
    }

    fn grow_image(&mut self, name: String, size_bytes: u64) -> Result<u64, LoopError> {
        if size_bytes > MAX_IMAGE_BYTES {
            return Err(failed(format!("image size {size_bytes} is over 16 TiB")));
        }
        let file = self.locked(&name)?;
        let len = file.metadata().map_err(failed)?.len();
        if len >= size_bytes {
            return Ok(len);
        }
        file.set_len(size_bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| failed(format!("cannot grow image {name}: {e}")))?;
        Ok(size_bytes)
    }

    fn image_size(&mut self, name: String) -> Result<Option<u64>, LoopError> {
        match self.open(&name)? {
            Some(f) => Ok(Some(f.metadata().map_err(failed)?.len())),
            None => Ok(None),
        }
    }

    fn remove_image(&mut self, name: String) -> Result<(), LoopError> {
        let Some(file) = self.open(&name)? else {
            return Ok(());
        };
        let file = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| failed(format!("cannot lock image {name}: {e}")))?;
        if let Some(dev) = Self::device_of(&file)? {
            return Err(failed(format!(
                "image {name} is attached to {}; detach it first",
                dev.display()
            )));
        }
        self.dir()?
            .remove_file(&name)
            .map_err(|e| failed(format!("cannot remove image {name}: {e}")))
    }

    fn attach(&mut self, name: String) -> Result<String, LoopError> {
        let file = self.locked(&name)?;
        if let Some(dev) = Self::device_of(&file)? {
            return Ok(dev.to_string_lossy().into_owned());
        }
        let dev = loopdev::attach(&file, false).map_err(failed)?;
        Ok(dev.to_string_lossy().into_owned())
    }

    fn find(&mut self, name: String) -> Result<Option<String>, LoopError> {
        let Some(file) = self.open(&name)? else {
            return Ok(None);
        };
        Ok(Self::device_of(&file)?.map(|d| d.to_string_lossy().into_owned()))
    }

    fn detach(&mut self, name: String) -> Result<(), LoopError> {
        let Some(file) = self.open(&name)? else {
            return Ok(());
        };
        let file = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| failed(format!("cannot lock image {name}: {e}")))?;
        match Self::device_of(&file)? {
            Some(dev) => loopdev::detach(&dev).map_err(failed),
            None => Ok(()),
        }
    }

    fn refresh(&mut self, name: String) -> Result<(), LoopError> {
        let file = self.open_existing(&name)?;
        match Self::device_of(&file)? {
            Some(dev) => loopdev::set_capacity(&dev).map_err(failed),
            None => Err(LoopError::NotFound(format!("image {name} is not attached"))),
        }
    }
}

impl LoopImages {
    /// The loop device of image `name`, for resolving a `loop-image` locator.
    pub fn device_for(&mut self, name: &str) -> Result<Option<PathBuf>, LoopError> {
        let Some(file) = self.open(name)? else {
            return Ok(None);
        };
        Self::device_of(&file)
    }
}

pub fn add_to_linker(linker: &mut Linker<PluginHost>) -> wasmtime::Result<()> {
    wit::add_to_linker::<PluginHost, HasSelf<LoopImages>>(linker, |h| &mut h.loops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_be_paths() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "a\0b",
            "/etc/passwd",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["pv1.img", "a", "_x-1.2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }
}
