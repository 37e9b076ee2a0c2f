//! What the host mounted at `mountdevice`, remembered for `mount`.
//!
//! An attachable driver's volume is mounted once per node at its device
//! mount path, and each pod gets a bind mount of it. kubelet does that bind
//! itself when the driver answers `mount` "Not supported" — and drops the
//! `nosuid,nodev` the host set, since a bind mount starts with fresh
//! per-mount flags and kubelet remounts it plain `rw`. So the host never
//! answers "Not supported" there: it binds the device mount into the pod
//! dir itself, carrying its flags. To do that safely it must know that
//! what is mounted at the device mount path is what the host put there:
//! this record, written after a successful `mountdevice` and removed at
//! `unmountdevice`, says so (checked against the mount table at use).
//!
//! Records live in the host's part of the driver's state dir
//! (`<state>/host/device-mounts/`), never in the plugin's store, named by
//! the SHA-256 of the path.

use std::path::{Path, PathBuf};

use crate::layout::DriverLayout;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMount {
    pub path: PathBuf,
    pub device: PathBuf,
    pub fs_type: String,
    /// [`crate::options::RawOptions::volume_identity`] of the volume.
    pub volume: String,
}

const MAGIC: &str = "flexwasm-device-mount v2";

fn record_path(layout: &DriverLayout, path: &Path) -> PathBuf {
    let sha = crate::digest::sha256_hex(path.as_os_str().as_encoded_bytes());
    layout.state_dir.join("host/device-mounts").join(sha)
}

/// Remember that `device` (a `fs_type` filesystem) is mounted at `path`.
pub fn record(layout: &DriverLayout, m: &DeviceMount) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let file = record_path(layout, &m.path);
    if let Some(dir) = file.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let text = format!(
        "{MAGIC}\n{}\n{}\n{}\n{}\n",
        m.path.display(),
        m.device.display(),
        m.fs_type,
        m.volume
    );
    crate::precompiled::write_atomic(&file, text.as_bytes(), 0o600)?;
    if let Some(dir) = file.parent() {
        remove_orphaned_temp_files(dir);
    }
    Ok(())
}

/// Temp files of records whose writer was killed before its rename (see
/// `write_atomic`): nothing reads them, so they would pile up, one per such
/// kill. Only those whose writer is gone.
fn remove_orphaned_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let (Some(name), Ok(meta)) = (name.to_str(), entry.metadata())
            && crate::precompiled::is_orphaned_temp_file(name, &meta)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// What the host recorded for `path`, if anything (and the record is whole
/// and about this very path).
pub fn lookup(layout: &DriverLayout, path: &Path) -> Option<DeviceMount> {
    let text = std::fs::read_to_string(record_path(layout, path)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let m = DeviceMount {
        path: PathBuf::from(lines.next()?),
        device: PathBuf::from(lines.next()?),
        fs_type: lines.next()?.to_string(),
        volume: lines.next()?.to_string(),
    };
    (m.path == path).then_some(m)
}

/// Forget what was mounted at `path` (nothing recorded is fine).
pub fn forget(layout: &DriverLayout, path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(record_path(layout, path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::DriverName;

    /// A driver layout in `dir`, and a device mount at `path`.
    fn layout_and_mount(dir: &Path, path: &str) -> (DriverLayout, DeviceMount) {
        let mut layout = DriverLayout::for_driver(
            DriverName::parse("acme/x").unwrap(),
            dir.join("plugins/acme~x"),
        );
        layout.state_dir = dir.join("state");
        let m = DeviceMount {
            path: path.into(),
            device: "/dev/loop7".into(),
            fs_type: "ext4".into(),
            volume: "ab12".into(),
        };
        (layout, m)
    }

    #[test]
    fn records_round_trip_and_are_per_path() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, m) = layout_and_mount(
            dir.path(),
            "/k/plugins/kubernetes.io/flexvolume/acme/x/mounts/v",
        );
        assert_eq!(lookup(&layout, &m.path), None);
        record(&layout, &m).unwrap();
        assert_eq!(lookup(&layout, &m.path), Some(m.clone()));
        assert_eq!(lookup(&layout, Path::new("/k/other")), None);
        forget(&layout, &m.path).unwrap();
        forget(&layout, &m.path).unwrap();
        assert_eq!(lookup(&layout, &m.path), None);
    }

    #[test]
    fn temp_files_of_killed_writers_are_removed_by_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, m) = layout_and_mount(dir.path(), "/k/mounts/v");
        record(&layout, &m).unwrap();
        let records = record_path(&layout, &m.path)
            .parent()
            .unwrap()
            .to_path_buf();
        use std::os::unix::fs::MetadataExt;
        let ns = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
        // A writer SIGKILLed before its rename (no such pid), one still
        // writing (this process), one of another pid namespace (whose pid
        // says nothing here) and one from before names carried the
        // namespace: only the first is known gone.
        let dead = records.join(format!(".abc.tmp-{ns}-4194304999"));
        let live = records.join(format!(".abc.tmp-{ns}-{}", std::process::id()));
        let elsewhere = records.join(format!(".abc.tmp-{}-4194304999", ns + 1));
        let legacy = records.join(".abc.tmp-4194304999");
        for file in [&dead, &live, &elsewhere, &legacy] {
            std::fs::write(file, "x").unwrap();
        }
        record(&layout, &m).unwrap();
        assert!(!dead.exists());
        assert!(live.exists() && elsewhere.exists() && legacy.exists());
        // Older than any call lives: gone, whoever wrote them.
        let long_ago = std::time::SystemTime::now()
            - std::time::Duration::from_secs(crate::policy::MAX_DEADLINE_SECS + 120);
        for file in [&elsewhere, &legacy] {
            std::fs::File::options()
                .write(true)
                .open(file)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        record(&layout, &m).unwrap();
        assert!(!elsewhere.exists() && !legacy.exists());
        assert!(live.exists());
        assert_eq!(lookup(&layout, &m.path), Some(m));
    }
}
