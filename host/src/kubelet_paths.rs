//! The paths kubelet builds for a FlexVolume driver (contract page §1), and
//! reading them back.
//!
//! ```text
//! pod volume dir:     <kubelet-root>/pods/<pod-uid>/volumes/<vendor>~<driver>/<volume>
//! device mount path:  <kubelet-root>/plugins/kubernetes.io/flexvolume/<vendor>/<driver>/mounts/<volume>
//! ```
//!
//! `<volume>` is the same name in both (the PV name, or the pod's volume
//! name for an inline volume): kubelet's own fallback for `mount`
//! bind-mounts the second onto the first. The host does the same bind
//! itself (see `driver_call`), so it must find one from the other exactly
//! as kubelet does.

use std::path::{Component, Path, PathBuf};

use crate::layout::DriverName;

/// A pod volume dir of this driver, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVolumeDir {
    pub kubelet_root: PathBuf,
    pub pod_uid: String,
    pub volume: String,
}

/// The normal components of an absolute path without `.` or `..`.
fn names(path: &Path) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    for (i, c) in path.components().enumerate() {
        match c {
            Component::RootDir if i == 0 => {}
            Component::Normal(n) => out.push(n.to_str()?),
            _ => return None,
        }
    }
    (path.is_absolute()).then_some(out)
}

fn root_of(parts: &[&str]) -> PathBuf {
    let mut root = PathBuf::from("/");
    root.extend(parts);
    root
}

/// Read `<root>/pods/<uid>/volumes/<vendor>~<driver>/<volume>`; `None` when
/// `path` is not shaped like a pod volume dir of `driver`.
pub fn parse_pod_volume_dir(path: &Path, driver: &DriverName) -> Option<PodVolumeDir> {
    let n = names(path)?;
    let k = n.len().checked_sub(5)?;
    let [pods, uid, volumes, plugin, volume] = n[k..] else {
        return None;
    };
    (pods == "pods" && volumes == "volumes" && plugin == driver.dir_name() && !uid.is_empty()).then(
        || PodVolumeDir {
            kubelet_root: root_of(&n[..k]),
            pod_uid: uid.to_string(),
            volume: volume.to_string(),
        },
    )
}

/// Where kubelet has `driver` mount the device of `volume`.
pub fn device_mount_path(kubelet_root: &Path, driver: &DriverName, volume: &str) -> PathBuf {
    kubelet_root
        .join("plugins/kubernetes.io/flexvolume")
        .join(&driver.vendor)
        .join(&driver.driver)
        .join("mounts")
        .join(volume)
}

/// The kubelet root of a pod volume dir or device mount path of `driver`.
pub fn kubelet_root_of(path: &Path, driver: &DriverName) -> Option<PathBuf> {
    if let Some(pod) = parse_pod_volume_dir(path, driver) {
        return Some(pod.kubelet_root);
    }
    let n = names(path)?;
    let k = n.len().checked_sub(7)?;
    is_device_mount_path(path, driver).then(|| root_of(&n[..k]))
}

/// Whether a mount at `mount_point` is one kubelet or the host makes of a
/// volume of `driver` in a pod: the pod volume dir itself, or a subPath
/// bind kubelet makes from it
/// (`<kubelet_root>/pods/<uid>/volume-subpaths/<volume>/<container>/<n>`).
pub fn is_pod_binding(mount_point: &Path, driver: &DriverName, kubelet_root: &Path) -> bool {
    if parse_pod_volume_dir(mount_point, driver).is_some_and(|p| p.kubelet_root == kubelet_root) {
        return true;
    }
    let Ok(rest) = mount_point.strip_prefix(kubelet_root.join("pods")) else {
        return false;
    };
    let rest = Path::new("/").join(rest);
    let Some(n) = names(&rest) else {
        return false;
    };
    n.len() == 5 && n[1] == "volume-subpaths"
}

/// Whether `path` is shaped like a device mount path of `driver`.
pub fn is_device_mount_path(path: &Path, driver: &DriverName) -> bool {
    let Some(n) = names(path) else {
        return false;
    };
    let Some(k) = n.len().checked_sub(7) else {
        return false;
    };
    n[k..k + 6]
        == [
            "plugins",
            "kubernetes.io",
            "flexvolume",
            &driver.vendor,
            &driver.driver,
            "mounts",
        ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_dirs_and_device_mount_paths_read_back() {
        let d = DriverName::parse("example.com/loop").unwrap();
        let pod = Path::new("/var/lib/kubelet/pods/u-1/volumes/example.com~loop/pv-1");
        let p = parse_pod_volume_dir(pod, &d).unwrap();
        assert_eq!(p.kubelet_root, Path::new("/var/lib/kubelet"));
        assert_eq!((p.pod_uid.as_str(), p.volume.as_str()), ("u-1", "pv-1"));
        let dev = device_mount_path(&p.kubelet_root, &d, &p.volume);
        assert_eq!(
            dev,
            Path::new(
                "/var/lib/kubelet/plugins/kubernetes.io/flexvolume/example.com/loop/mounts/pv-1"
            )
        );
        assert!(is_device_mount_path(&dev, &d));
        for bad in [
            "/var/lib/kubelet/pods/u-1/volumes/other~loop/pv-1",
            "/var/lib/kubelet/pods/u-1/volumes/example.com~loop/../x",
            "pods/u/volumes/example.com~loop/v",
            "/pods/u/volumes/example.com~loop",
        ] {
            assert_eq!(parse_pod_volume_dir(Path::new(bad), &d), None, "{bad}");
        }
        assert!(!is_device_mount_path(pod, &d));
        let root = Path::new("/var/lib/kubelet");
        assert_eq!(kubelet_root_of(&dev, &d).as_deref(), Some(root));
        assert_eq!(kubelet_root_of(pod, &d).as_deref(), Some(root));
        assert!(is_pod_binding(pod, &d, root));
        assert!(is_pod_binding(
            Path::new("/var/lib/kubelet/pods/u-2/volume-subpaths/data/app/0"),
            &d,
            root
        ));
        assert!(!is_pod_binding(
            Path::new("/var/lib/kubelet/pods/u-2/volume-subpaths/data/app/0/x"),
            &d,
            root
        ));
        assert!(!is_pod_binding(
            Path::new("/mnt/pods/u-2/volume-subpaths/data/app/0"),
            &d,
            root
        ));
        assert!(!is_pod_binding(&dev, &d, root));
    }
}
