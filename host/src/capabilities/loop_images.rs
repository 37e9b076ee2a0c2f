//! `flexwasm:driver/loop`: file-backed loop devices, with images confined
//! to one directory.
//!
//! Threat model: the plugin names an image; it never gives a path. A name
//! is a single path component of `[A-Za-z0-9_][A-Za-z0-9._-]*` (so no `/`,
//! no `..`, no hidden files), and the directory is opened as a capability
//! (`cap-std`), so even a symlink planted in it cannot lead outside. Only
//! regular files are attached. Attach and detach hold an exclusive lock on
//! the image, so concurrent calls never attach one image twice.
//!
//! Bounds ([`LoopLimits`], from the grant's `[loop]` table): how many
//! images, their total apparent size, how many loop devices are attached
//! from them at once, and how many one call attaches. Images are sparse
//! and fill up later, so creating or growing one is also refused unless
//! what all of them could still grow (apparent minus allocated size) fits
//! in the image filesystem's space above its reserve
//! ([`crate::state::space`]). "This driver's images" are the regular files
//! in the image dir with names a plugin could give. Creating, growing and
//! attaching take an exclusive lock on the image dir (after the image's
//! own lock, never before), so concurrent calls cannot both take the last
//! slot.

use crate::bindings::flexwasm::driver::loop_::{self as wit, LoopError};
use crate::node::loopdev;
use crate::policy::LoopLimits;
use crate::secrets::SecretSet;
use crate::state::space::{FsSpace, MIN_RESERVE_BYTES, RESERVE_PERCENT, human_bytes};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt as _, OpenOptions};
use nix::fcntl::{Flock, FlockArg};
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use wasmtime::component::{HasSelf, Linker};

pub const MAX_NAME_BYTES: usize = 128;
/// Refuse absurd sizes early (16 TiB).
pub const MAX_IMAGE_BYTES: u64 = 16 << 40;

pub struct LoopImages {
    dir_path: PathBuf,
    limits: LoopLimits,
    dir: Option<Dir>,
    /// Loop devices this call has attached.
    attached_by_call: u64,
    /// The call's secrets: never part of an image name, which the kernel
    /// shows every user as the loop device's backing file
    /// (`/sys/block/loopN/loop/backing_file`, `losetup -a`).
    secrets: SecretSet,
    /// Each loop device this call told the plugin of, with the image
    /// (`st_dev`, `st_ino`) it was backed by then: see [`Self::image_behind`].
    handed_out: Vec<(PathBuf, (u64, u64))>,
}

/// This driver's images, as found under the image dir's lock.
struct Census {
    count: u64,
    /// Sum of apparent sizes.
    apparent: u64,
    /// What they could still grow: apparent minus allocated, summed.
    growth: u64,
    /// (st_dev, st_ino) of each.
    inodes: HashSet<(u64, u64)>,
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
    /// With the default limits, what `[loop]` with only `image_dir` grants.
    pub fn new(dir_path: PathBuf) -> Self {
        Self::with_limits(dir_path, LoopLimits::default())
    }

    /// With the grant's limits (`Grant::loop_limits`).
    pub fn with_limits(dir_path: PathBuf, limits: LoopLimits) -> Self {
        LoopImages {
            dir_path,
            limits,
            dir: None,
            attached_by_call: 0,
            secrets: SecretSet::new(),
            handed_out: Vec::new(),
        }
    }

    /// Refuse image names that hold one of `secrets`.
    pub fn with_secrets(mut self, secrets: SecretSet) -> Self {
        self.secrets = secrets;
        self
    }

    /// [`check_name`], and no secret in the name.
    fn check(&self, name: &str) -> Result<(), LoopError> {
        check_name(name)?;
        if self.secrets.found_in(name) {
            return Err(LoopError::InvalidName(
                "image name holds a secret (a [config] secret or one kubelet passed): \
                 every user of the node can read an attached image's name"
                    .into(),
            ));
        }
        Ok(())
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
        self.check(name)?;
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

    /// Whether `name` is still the file `file` is open on.
    fn still_named(&mut self, name: &str, file: &File) -> Result<bool, LoopError> {
        let held = file.metadata().map_err(failed)?;
        Ok(match self.open(name)? {
            Some(now) => {
                let now = now.metadata().map_err(failed)?;
                (now.dev(), now.ino()) == (held.dev(), held.ino())
            }
            None => false,
        })
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

    /// [`Self::device_of`], remembered as told to the plugin.
    fn hand_out(&mut self, file: &File) -> Result<Option<PathBuf>, LoopError> {
        let dev = Self::device_of(file)?;
        if let Some(dev) = &dev {
            self.remember(dev, file)?;
        }
        Ok(dev)
    }

    /// Note that the plugin was told `device` is backed by `image`. One
    /// entry per device (the latest): a plugin asking again and again
    /// does not grow the list.
    fn remember(&mut self, device: &Path, image: &File) -> Result<(), LoopError> {
        let meta = image.metadata().map_err(failed)?;
        self.handed_out.retain(|(d, _)| d != device);
        self.handed_out
            .push((device.to_path_buf(), (meta.dev(), meta.ino())));
        Ok(())
    }

    /// The image (`st_dev`, `st_ino`) `device` was backed by when this
    /// call told the plugin of it, if it did. A loop device is a number
    /// the kernel reuses: detached and re-attached meanwhile (by another
    /// call), it is another volume's, and a plan naming it must not be
    /// carried out as if it were the one the plugin looked up.
    pub fn image_behind(&self, device: &Path) -> Option<(u64, u64)> {
        let resolved = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let device = resolved(device);
        self.handed_out
            .iter()
            .rev()
            .find(|(d, _)| resolved(d) == device)
            .map(|(_, image)| *image)
    }

    /// An exclusive lock on the image dir, held while counting and then
    /// creating, growing or attaching. Take it after an image's own lock.
    fn lock_dir(&mut self) -> Result<Flock<File>, LoopError> {
        use std::os::unix::fs::OpenOptionsExt;
        self.dir()?;
        let path = self.dir_path.display().to_string();
        // cap-std holds the dir as an O_PATH descriptor, which flock
        // refuses: open it for reading. The lock is advisory, between calls
        // of this driver; the images themselves are only reached through
        // the capability.
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.dir_path)
            .map_err(|e| failed(format!("cannot open image dir {path}: {e}")))?;
        Flock::lock(dir, FlockArg::LockExclusive)
            .map_err(|(_, e)| failed(format!("cannot lock image dir {path}: {e}")))
    }

    /// Count this driver's images; the caller holds the dir lock.
    fn census(&mut self) -> Result<Census, LoopError> {
        let path = self.dir_path.display().to_string();
        let listing = |e: std::io::Error| failed(format!("cannot list image dir {path}: {e}"));
        let mut census = Census {
            count: 0,
            apparent: 0,
            growth: 0,
            inodes: HashSet::new(),
        };
        for entry in self.dir()?.entries().map_err(listing)? {
            let entry = entry.map_err(listing)?;
            let name = entry.file_name();
            if name.to_str().is_none_or(|n| check_name(n).is_err()) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Removed since the listing (remove-image takes no dir lock).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(listing(e)),
            };
            if !meta.is_file() {
                continue;
            }
            let allocated = meta.blocks().saturating_mul(512);
            census.count += 1;
            census.apparent = census.apparent.saturating_add(meta.len());
            census.growth = census
                .growth
                .saturating_add(meta.len().saturating_sub(allocated));
            census.inodes.insert((meta.dev(), meta.ino()));
        }
        Ok(census)
    }

    /// Refuse adding `added` bytes of apparent size (a new image, or an
    /// image grown) when over `max_total_bytes` or more than the image
    /// filesystem can hold above its reserve once the images fill up.
    fn check_room(&self, census: &Census, added: u64) -> Result<(), LoopError> {
        let dir = self.dir_path.display();
        let total = census.apparent.saturating_add(added);
        if total > self.limits.max_total_bytes {
            return Err(failed(format!(
                "the images in {dir} would total {} ({} now, {} more), over this driver's \
                 max_total_gib = {} (sizes count in full: images are sparse and fill up later); \
                 remove images no longer needed, use a smaller size, or raise [loop] \
                 max_total_gib in the driver's policy",
                human_bytes(total),
                human_bytes(census.apparent),
                human_bytes(added),
                self.limits.max_total_bytes >> 30
            )));
        }
        let space = FsSpace::of(&self.dir_path)
            .map_err(|e| failed(format!("cannot read the free space of {dir}: {e}")))?;
        let growth = census.growth.saturating_add(added);
        if growth > space.room() {
            return Err(failed(format!(
                "the images in {dir} could still grow by {} (their unwritten sparse space) and \
                 this adds {}, but the filesystem at {} has {} available, {} above its reserve \
                 of {} (the larger of {} and {RESERVE_PERCENT} % of its {}: below that kubelet \
                 evicts pods); use a smaller size, remove images no longer needed, or give the \
                 driver a larger image filesystem",
                human_bytes(census.growth),
                human_bytes(added),
                space.filesystem(),
                human_bytes(space.available),
                human_bytes(space.room()),
                human_bytes(space.reserve()),
                human_bytes(MIN_RESERVE_BYTES),
                human_bytes(space.size)
            )));
        }
        Ok(())
    }

    /// Loop devices attached now from this driver's images.
    fn attached_from_images(census: &Census) -> Result<u64, LoopError> {
        let devices = loopdev::attached().map_err(failed)?;
        Ok(devices
            .iter()
            .filter(|(_, s)| {
                let dev = libc::makedev(s.backing_major, s.backing_minor);
                census.inodes.contains(&(dev, s.backing_inode))
            })
            .count() as u64)
    }
}

impl wit::Host for LoopImages {
    fn create_image(&mut self, name: String, size_bytes: u64) -> Result<u64, LoopError> {
        self.check(&name)?;
        if size_bytes == 0 || size_bytes > MAX_IMAGE_BYTES {
            return Err(failed(format!(
                "image size {size_bytes} is out of range (1 byte to 16 TiB)"
            )));
        }
        // An empty image is one whose creation was cut short (the call
        // killed between creating the file and sizing it: every image is
        // created at least 1 byte long): it holds nothing, and finishing it
        // here is what lets the retry of that call work. Left empty, it
        // would attach as a 0-byte device that no mkfs or mount can use.
        let size_of = |f: &File| f.metadata().map(|m| m.len()).map_err(failed);
        let lock = |f: File, how: FlockArg| {
            Flock::lock(f, how).map_err(|(_, e)| failed(format!("cannot lock image {name}: {e}")))
        };
        // Lock order: an image's own lock, then the dir lock. An unfinished
        // image is finished under its own lock, so no attach (which takes
        // it, and refuses an empty image) sees it half done.
        let mut unfinished = match self.open(&name)? {
            Some(existing) if size_of(&existing)? > 0 => return size_of(&existing),
            Some(existing) => Some(lock(existing, FlockArg::LockExclusive)?),
            None => None,
        };
        // Removed (or replaced) while we waited for its lock: what we hold
        // is no longer the image of that name.
        if let Some(locked) = &unfinished
            && !self.still_named(&name, locked)?
        {
            return Err(failed(format!(
                "image {name} was removed or replaced while this call waited for it; try again"
            )));
        }
        let _dir_lock = self.lock_dir()?;
        // Another call may have created or finished it while we waited for
        // a lock. Creating and sizing happen under the dir lock, so an
        // empty image found now is one whose creator was killed; its own
        // lock is only tried (waiting for it under the dir lock could wait
        // on a call waiting for the dir lock).
        match &unfinished {
            Some(locked) if size_of(locked)? > 0 => return size_of(locked),
            Some(_) => {}
            None => match self.open(&name)? {
                Some(existing) if size_of(&existing)? > 0 => return size_of(&existing),
                Some(existing) => {
                    unfinished = Some(lock(existing, FlockArg::LockExclusiveNonblock)?);
                }
                None => {}
            },
        }
        let census = self.census()?;
        // An unfinished image is counted already.
        if unfinished.is_none() && census.count >= self.limits.max_images {
            return Err(failed(format!(
                "the image dir {} holds {} images, the most this driver may have \
                 (max_images = {}); remove images no longer needed, or raise [loop] max_images \
                 in the driver's policy",
                self.dir_path.display(),
                census.count,
                self.limits.max_images
            )));
        }
        self.check_room(&census, size_bytes)?;
        let created;
        let file: &File = match &unfinished {
            Some(locked) => locked,
            None => {
                created = match self.dir()?.open_with(
                    &name,
                    OpenOptions::new().read(true).write(true).create_new(true),
                ) {
                    Ok(f) => f.into_std(),
                    Err(e) => return Err(failed(format!("cannot create image {name}: {e}"))),
                };
                &created
            }
        };
        // Sparse: set_len allocates nothing.
        file.set_len(size_bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| failed(format!("cannot size image {name}: {e}")))?;
        // Attached while empty (by a host before attach refused that): the
        // device learns its size.
        if unfinished.is_some()
            && let Some(dev) = Self::device_of(file)?
        {
            loopdev::set_capacity(&dev).map_err(failed)?;
        }
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
        let _dir_lock = self.lock_dir()?;
        let census = self.census()?;
        self.check_room(&census, size_bytes - len)?;
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
        if let Some(dev) = self.hand_out(&file)? {
            return Ok(dev.to_string_lossy().into_owned());
        }
        if self.attached_by_call >= self.limits.max_attaches_per_call {
            return Err(failed(format!(
                "this call has attached {} loop device(s) already, the most one call may \
                 (max_attaches_per_call = {}; a call is for one volume); attach image {name} in \
                 a call of its own, or raise [loop] max_attaches_per_call in the driver's policy",
                self.attached_by_call, self.limits.max_attaches_per_call
            )));
        }
        let _dir_lock = self.lock_dir()?;
        // Sized under the dir lock: an empty image is one whose creation
        // was cut short. Attached, it would be a 0-byte device no mkfs or
        // mount can use, which a later sizing does not grow.
        if file.metadata().map_err(failed)?.len() == 0 {
            return Err(failed(format!(
                "image {name} is empty (its creation was cut short): create it again \
                 (create-image finishes it) before attaching it"
            )));
        }
        let census = self.census()?;
        let attached = Self::attached_from_images(&census)?;
        if attached >= self.limits.max_attached {
            return Err(failed(format!(
                "{attached} loop devices are attached from this driver's images in {} already, \
                 the most it may have (max_attached = {}); detach volumes no longer in use, or \
                 raise [loop] max_attached in the driver's policy",
                self.dir_path.display(),
                self.limits.max_attached
            )));
        }
        // The loop device keeps the open file it is given for as long as it
        // is attached, and with it that file's lock: given `file`, a call
        // killed between the attach and its unlock (the host SIGKILLed)
        // would leave the image locked until the device is detached — which
        // takes the lock — so every later attach and detach of the volume
        // would hang until its deadline. The device gets an open file of its
        // own, of the same inode.
        let backing =
            reopen(&file).map_err(|e| failed(format!("cannot reopen image {name}: {e}")))?;
        let dev = loopdev::attach(&backing, false).map_err(failed)?;
        self.remember(&dev, &file)?;
        self.attached_by_call += 1;
        Ok(dev.to_string_lossy().into_owned())
    }

    fn find(&mut self, name: String) -> Result<Option<String>, LoopError> {
        let Some(file) = self.open(&name)? else {
            return Ok(None);
        };
        Ok(self
            .hand_out(&file)?
            .map(|d| d.to_string_lossy().into_owned()))
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
        self.hand_out(&file)
    }
}

/// A new open file (description) of the file `file` is open on, read-write,
/// sharing nothing with it (not its offset, not its locks).
fn reopen(file: &File) -> std::io::Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Link `flexwasm:driver/loop` for a store whose data holds the call's
/// [`LoopImages`] where `loops` finds them.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    loops: fn(&mut T) -> &mut LoopImages,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<LoopImages>>(linker, loops)
}

#[cfg(test)]
mod tests {
    use super::wit::Host as _;
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

    /// An image dir under the system temp dir; on drop, detaches every loop
    /// device backed by one of its files and removes it.
    struct ImageDir(PathBuf);

    impl ImageDir {
        fn new(tag: &str) -> ImageDir {
            let dir = std::env::temp_dir()
                .join(format!("flexwasm-loop-images-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            ImageDir(dir)
        }

        fn images(&self, limits: LoopLimits) -> LoopImages {
            LoopImages::with_limits(self.0.clone(), limits)
        }
    }

    impl Drop for ImageDir {
        fn drop(&mut self) {
            if let Ok(devices) = loopdev::attached() {
                for (dev, status) in devices {
                    let ours = std::fs::read_dir(&self.0)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|e| e.metadata().is_ok_and(|m| m.ino() == status.backing_inode));
                    if ours {
                        loopdev::detach_eventually(&dev);
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn refused(result: Result<impl std::fmt::Debug, LoopError>, parts: &[&str]) {
        match result {
            Err(LoopError::Failed(message)) => {
                for part in parts {
                    assert!(message.contains(part), "{message:?} lacks {part:?}");
                }
            }
            other => panic!("expected a refusal mentioning {parts:?}, got {other:?}"),
        }
    }

    #[test]
    fn the_grant_bounds_image_count_and_total_size() {
        let dir = ImageDir::new("bounds");
        let limits = LoopLimits {
            max_images: 3,
            max_total_bytes: 1 << 30,
            ..LoopLimits::default()
        };
        let mut images = dir.images(limits);
        for n in 0..2 {
            assert_eq!(
                images.create_image(format!("i{n}"), 400 << 20).unwrap(),
                400 << 20
            );
        }
        // An existing image is no new image: not refused.
        assert_eq!(images.create_image("i0".into(), 1).unwrap(), 400 << 20);
        refused(
            images.create_image("i2".into(), 300 << 20),
            &[
                "would total 1.1 GiB (800.0 MiB now, 300.0 MiB more)",
                "max_total_gib = 1",
            ],
        );
        refused(
            images.grow_image("i1".into(), 700 << 20),
            &["would total 1.1 GiB", "max_total_gib = 1"],
        );
        images.create_image("i2".into(), 200 << 20).unwrap();
        refused(
            images.create_image("i3".into(), 1),
            &["holds 3 images", "max_images = 3"],
        );
        // Files a plugin cannot name are not its images.
        std::fs::write(dir.0.join(".hidden"), b"x").unwrap();
        images.remove_image("i2".into()).unwrap();
        images.create_image("i3".into(), 1).unwrap();
    }

    #[test]
    fn an_image_left_empty_by_a_killed_create_is_finished_by_the_retry() {
        let dir = ImageDir::new("unfinished");
        let limits = LoopLimits {
            max_images: 1,
            ..LoopLimits::default()
        };
        let mut images = dir.images(limits);
        std::fs::create_dir_all(&dir.0).unwrap();
        // What a call SIGKILLed between creating the file and sizing it
        // leaves (tests/crash.rs): an empty image, counted as one.
        std::fs::File::create(dir.0.join("pv1.img")).unwrap();
        // Attached as it is, it would be a 0-byte device.
        refused(
            images.attach("pv1.img".into()),
            &["image pv1.img is empty", "create it again"],
        );
        assert_eq!(
            images.create_image("pv1.img".into(), 4 << 20).unwrap(),
            4 << 20
        );
        assert_eq!(
            std::fs::metadata(dir.0.join("pv1.img")).unwrap().len(),
            4 << 20
        );
        // Finished, it is an image like any other: kept as it is.
        assert_eq!(
            images.create_image("pv1.img".into(), 8 << 20).unwrap(),
            4 << 20
        );
    }

    #[test]
    fn the_file_a_loop_device_keeps_does_not_keep_the_image_locked() {
        let dir = ImageDir::new("reopen");
        let mut images = dir.images(LoopLimits::default());
        images.create_image("i0".into(), 1 << 20).unwrap();
        let locked = images.locked("i0").unwrap();
        // What attach hands the loop device: another open file of the
        // image, so the lock conflicts with it…
        let backing = match Flock::lock(reopen(&locked).unwrap(), FlockArg::LockExclusiveNonblock) {
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
            other => panic!(
                "the reopened image shares the lock: {:?}",
                other.map(|_| ())
            ),
        };
        // …and goes with the call's file (closed when the call ends, even
        // killed), while the device keeps `backing`.
        drop(locked);
        Flock::lock(backing, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .expect("nothing keeps the image locked");
    }

    #[test]
    fn the_grant_bounds_attached_devices_per_call_and_in_all() {
        if !nix::unistd::geteuid().is_root() {
            crate::test_skip::skip(
                "the_grant_bounds_attached_devices_per_call_and_in_all",
                "needs root (loop devices)",
            );
            return;
        }
        let dir = ImageDir::new("attach");
        let limits = LoopLimits {
            max_attached: 3,
            max_attaches_per_call: 2,
            ..LoopLimits::default()
        };
        let mut call = dir.images(limits);
        for n in 0..4 {
            call.create_image(format!("d{n}"), 1 << 20).unwrap();
        }
        let d0 = call.attach("d0".into()).unwrap();
        // What the plugin was told, for the host to check before it mounts.
        let d0_image = std::fs::metadata(dir.0.join("d0")).unwrap();
        assert_eq!(
            call.image_behind(Path::new(&d0)),
            Some((d0_image.dev(), d0_image.ino()))
        );
        assert_eq!(call.image_behind(Path::new("/dev/loop-never")), None);
        call.attach("d1".into()).unwrap();
        // Already attached: no new attach.
        assert_eq!(call.attach("d0".into()).unwrap(), d0);
        refused(
            call.attach("d2".into()),
            &[
                "attached 2 loop device(s) already",
                "max_attaches_per_call = 2",
            ],
        );
        let mut next_call = dir.images(limits);
        next_call.attach("d2".into()).unwrap();
        refused(
            next_call.attach("d3".into()),
            &["3 loop devices are attached", "max_attached = 3"],
        );
        // A detach makes room.
        next_call.detach("d0".into()).unwrap();
        next_call.attach("d3".into()).unwrap();
        for n in 1..4 {
            next_call.detach(format!("d{n}")).unwrap();
        }
    }
}
