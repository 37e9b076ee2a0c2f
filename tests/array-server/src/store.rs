//! The array's volumes: sparse image files under `images/`, their records in
//! `volumes.json`, their attachments as loop devices.
//!
//! Every change is written to `volumes.json` before it is answered (temp
//! file, fsync, rename, fsync of the directory), so a server killed at any
//! point restarts with what it last acknowledged. The caller serialises all
//! calls (one lock around the store), which also makes it the process-wide
//! lock around `losetup`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flexwasm_array_server::{Volume, loopdev, serial_for};
use serde::{Deserialize, Serialize};

/// Sizes are bytes of a block device: rounded up to whole 512-byte sectors
/// (a loop device silently drops a partial one; arrays allocate in units
/// too, so a Kubernetes `1M` still works), and at most 1 TiB (images are
/// sparse, but a typo should not make a 16 EiB file).
const SECTOR: u64 = 512;
const MAX_SIZE_BYTES: u64 = 1 << 40;
/// Kubernetes object names are at most 253 characters; so are node names.
const MAX_NAME_LEN: usize = 253;

/// An error the API answers with: an HTTP status and a message for a person.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn not_found(id: &str) -> Self {
        Self::new(404, format!("volume {id} not found"))
    }

    fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        Self::new(500, format!("{what}: {e}"))
    }
}

/// `volumes.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    volumes: Vec<Volume>,
}

const STATE_FORMAT: u32 = 1;

pub struct Store {
    images: PathBuf,
    state_path: PathBuf,
    volumes: BTreeMap<String, Volume>,
}

impl Store {
    /// Loads `data_dir` (absolute and canonical: backing files are compared
    /// with what the kernel reports) and reconciles recorded attachments
    /// with the loop devices that exist now. Returns the store and one note
    /// per record it had to fix, for the log.
    pub fn open(data_dir: &Path) -> io::Result<(Store, Vec<String>)> {
        let images = data_dir.join("images");
        fs::create_dir_all(&images)?;
        let state_path = data_dir.join("volumes.json");
        let mut store = Store {
            images,
            state_path,
            volumes: BTreeMap::new(),
        };
        let text = match fs::read_to_string(&store.state_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let Some(text) = text else {
            return Ok((store, Vec::new()));
        };
        // A corrupt state file stops the server: starting empty would
        // silently forget volumes (and their attached loop devices).
        let state: StateFile = serde_json::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", store.state_path.display()),
            )
        })?;
        if state.format != STATE_FORMAT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: format {} (this server reads {STATE_FORMAT})",
                    store.state_path.display(),
                    state.format
                ),
            ));
        }
        let mut notes = Vec::new();
        for mut volume in state.volumes {
            notes.extend(store.reconcile(&mut volume));
            store.volumes.insert(volume.id.clone(), volume);
        }
        if !notes.is_empty() {
            store.persist()?;
        }
        Ok((store, notes))
    }

    /// Brings one loaded record in line with this data directory and the
    /// loop devices that exist now.
    fn reconcile(&self, volume: &mut Volume) -> Vec<String> {
        let mut notes = Vec::new();
        let image = self.image_path(&volume.id);
        let backing_file = image.to_string_lossy().into_owned();
        if volume.backing_file != backing_file {
            notes.push(format!(
                "{}: backing file {} is now {backing_file} (data directory moved)",
                volume.id, volume.backing_file
            ));
            volume.backing_file = backing_file;
        }
        volume.serial = serial_for(&volume.id);
        if !image.is_file() {
            notes.push(format!(
                "{}: image {} is missing",
                volume.id,
                image.display()
            ));
        }
        let recorded = volume.device.clone();
        let still_backed = recorded.as_deref().is_some_and(|device| {
            loopdev::backing_file(device).as_deref() == Some(image.as_path())
        });
        match (&volume.attached_to, recorded) {
            (Some(_), Some(_)) if still_backed => {}
            (Some(node), device) => match loopdev::backed_by(&image).into_iter().next() {
                // Another device still backs the image (re-attached behind
                // our back): the attachment holds, the record was stale.
                Some(found) => {
                    notes.push(format!(
                        "{}: attached to {node} via {found}, not {device:?}; record fixed",
                        volume.id
                    ));
                    volume.device = Some(found);
                }
                // The device is gone (detached by hand, node rebooted): the
                // volume is no longer attached anywhere, and saying so lets
                // the next attach create a fresh device.
                None => {
                    notes.push(format!(
                        "{}: recorded attachment to {node} via {device:?} is gone; marked detached",
                        volume.id
                    ));
                    volume.attached_to = None;
                    volume.device = None;
                }
            },
            (None, Some(device)) => {
                notes.push(format!(
                    "{}: device {device} without a node; cleared",
                    volume.id
                ));
                volume.device = None;
            }
            (None, None) => {}
        }
        notes
    }

    fn image_path(&self, id: &str) -> PathBuf {
        self.images.join(format!("{id}.img"))
    }

    pub fn list(&self, name: Option<&str>) -> Vec<Volume> {
        self.volumes
            .values()
            .filter(|v| name.is_none_or(|name| v.name == name))
            .cloned()
            .collect()
    }

    pub fn get(&self, id: &str) -> Result<Volume, ApiError> {
        self.volumes
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(id))
    }

    /// Creates volume `name`, or returns the existing one of that name and
    /// size. The flag says whether it was created.
    pub fn create(&mut self, name: &str, size_bytes: u64) -> Result<(Volume, bool), ApiError> {
        check_name("name", name)?;
        let size_bytes = checked_size(size_bytes)?;
        if let Some(existing) = self.volumes.values().find(|v| v.name == name) {
            if existing.size_bytes != size_bytes {
                return Err(ApiError::new(
                    409,
                    format!("volume {name} exists with size {}", existing.size_bytes),
                ));
            }
            return Ok((existing.clone(), false));
        }

        let (id, image) = self.new_image(size_bytes)?;
        let volume = Volume {
            serial: serial_for(&id),
            id: id.clone(),
            name: name.to_string(),
            size_bytes,
            attached_to: None,
            device: None,
            backing_file: image.to_string_lossy().into_owned(),
        };
        self.volumes.insert(id.clone(), volume.clone());
        if let Err(e) = self.persist() {
            self.volumes.remove(&id);
            let _ = fs::remove_file(&image);
            return Err(ApiError::internal("saving volumes.json", e));
        }
        Ok((volume, true))
    }

    /// A fresh id and its sparse image file of `size_bytes`.
    fn new_image(&self, size_bytes: u64) -> Result<(String, PathBuf), ApiError> {
        for _ in 0..16 {
            let id = format!(
                "vol-{:08x}",
                random_u32().map_err(|e| ApiError::internal("reading /dev/urandom", e))?
            );
            if self.volumes.contains_key(&id) {
                continue;
            }
            let image = self.image_path(&id);
            // create_new: never adopt a leftover image file as a new volume.
            let file = match OpenOptions::new().write(true).create_new(true).open(&image) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(ApiError::internal(
                        &format!("creating {}", image.display()),
                        e,
                    ));
                }
            };
            if let Err(e) = file.set_len(size_bytes).and_then(|()| file.sync_all()) {
                let _ = fs::remove_file(&image);
                return Err(ApiError::internal(
                    &format!("sizing {}", image.display()),
                    e,
                ));
            }
            return Ok((id, image));
        }
        Err(ApiError::new(500, "no free volume id after 16 tries"))
    }

    pub fn delete(&mut self, id: &str) -> Result<(), ApiError> {
        let volume = self.get(id)?;
        if let Some(node) = &volume.attached_to {
            return Err(ApiError::new(
                409,
                format!("volume {id} is attached to node {node}; detach it first"),
            ));
        }
        self.volumes.remove(id);
        if let Err(e) = self.persist() {
            self.volumes.insert(id.to_string(), volume);
            return Err(ApiError::internal("saving volumes.json", e));
        }
        // After the record is gone: a crash in between leaves an orphan
        // image, never a record without its image.
        match fs::remove_file(&volume.backing_file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ApiError::internal(
                &format!("removing {}", volume.backing_file),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// Grows the volume to `size_bytes`; the same size is a no-op (but an
    /// attached device is refreshed again, so a retry heals a refresh that
    /// failed the first time).
    pub fn resize(&mut self, id: &str, size_bytes: u64) -> Result<Volume, ApiError> {
        let size_bytes = checked_size(size_bytes)?;
        let mut volume = self.get(id)?;
        if size_bytes < volume.size_bytes {
            return Err(ApiError::new(
                409,
                format!(
                    "volume {id} is {} bytes; cannot shrink it to {size_bytes}",
                    volume.size_bytes
                ),
            ));
        }
        if size_bytes > volume.size_bytes {
            let file = OpenOptions::new()
                .write(true)
                .open(&volume.backing_file)
                .map_err(|e| ApiError::internal(&format!("opening {}", volume.backing_file), e))?;
            file.set_len(size_bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| ApiError::internal(&format!("growing {}", volume.backing_file), e))?;
            volume.size_bytes = size_bytes;
            self.save(volume.clone())?;
        }
        if let Some(device) = &volume.device
            && self.backs(device, &volume)
        {
            loopdev::refresh_size(device)
                .map_err(|e| ApiError::internal(&format!("refreshing the size of {device}"), e))?;
        }
        Ok(volume)
    }

    /// Attaches the volume to `node` as a loop device. Attached to `node`
    /// already: the same answer (re-attached if the device went away).
    pub fn attach(&mut self, id: &str, node: &str) -> Result<Volume, ApiError> {
        check_name("node", node)?;
        let mut volume = self.get(id)?;
        match (&volume.attached_to, &volume.device) {
            (Some(other), _) if other != node => {
                return Err(ApiError::new(
                    409,
                    format!("volume {id} is attached to node {other}; detach it there first"),
                ));
            }
            (Some(_), Some(device)) if self.backs(device, &volume) => return Ok(volume),
            _ => {}
        }
        let image = PathBuf::from(&volume.backing_file);
        let device = loopdev::attach(&image)
            .map_err(|e| ApiError::internal(&format!("attaching {}", image.display()), e))?;
        volume.attached_to = Some(node.to_string());
        volume.device = Some(device.clone());
        if let Err(e) = self.save(volume.clone()) {
            // Unrecorded, the device would leak: nobody would detach it.
            let _ = loopdev::detach(&device);
            return Err(e);
        }
        Ok(volume)
    }

    /// Detaches the volume from `node`. Not attached: the same answer.
    pub fn detach(&mut self, id: &str, node: &str) -> Result<Volume, ApiError> {
        check_name("node", node)?;
        let mut volume = self.get(id)?;
        match &volume.attached_to {
            None => return Ok(volume),
            Some(other) if other != node => {
                return Err(ApiError::new(
                    409,
                    format!("volume {id} is attached to node {other}, not {node}"),
                ));
            }
            Some(_) => {}
        }
        // Every device backed by the image, not just the recorded one: a
        // detached volume must leave no way to reach its data. Only devices
        // backed by *this* image: never detach someone else's device.
        let image = PathBuf::from(&volume.backing_file);
        for device in loopdev::backed_by(&image) {
            loopdev::detach(&device)
                .map_err(|e| ApiError::internal(&format!("detaching {device}"), e))?;
        }
        volume.attached_to = None;
        volume.device = None;
        self.save(volume.clone())?;
        Ok(volume)
    }

    fn backs(&self, device: &str, volume: &Volume) -> bool {
        loopdev::backing_file(device)
            .is_some_and(|file| file.as_os_str() == volume.backing_file.as_str())
    }

    /// Replaces a record and persists it; on failure the old record stays.
    fn save(&mut self, volume: Volume) -> Result<(), ApiError> {
        let old = self.volumes.insert(volume.id.clone(), volume.clone());
        self.persist().map_err(|e| {
            if let Some(old) = old {
                self.volumes.insert(old.id.clone(), old);
            }
            ApiError::internal("saving volumes.json", e)
        })
    }

    /// Writes `volumes.json` atomically: a reader (or a restart) sees the old
    /// file or the new one, never a torn one.
    fn persist(&self) -> io::Result<()> {
        let state = StateFile {
            format: STATE_FORMAT,
            volumes: self.volumes.values().cloned().collect(),
        };
        let mut text = serde_json::to_vec_pretty(&state).map_err(io::Error::other)?;
        text.push(b'\n');
        let tmp = self.state_path.with_extension("json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &self.state_path)?;
        if let Some(dir) = self.state_path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(ApiError::new(
            400,
            format!("{field} must be 1 to {MAX_NAME_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::new(
            400,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

/// `size_bytes` rounded up to a whole sector, if it is a size we serve.
fn checked_size(size_bytes: u64) -> Result<u64, ApiError> {
    match size_bytes.checked_next_multiple_of(SECTOR) {
        Some(rounded) if size_bytes > 0 && rounded <= MAX_SIZE_BYTES => Ok(rounded),
        _ => Err(ApiError::new(
            400,
            format!("size_bytes must be from 1 to {MAX_SIZE_BYTES}, not {size_bytes}"),
        )),
    }
}

fn random_u32() -> io::Result<u32> {
    let mut bytes = [0; 4];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(u32::from_ne_bytes(bytes))
}
