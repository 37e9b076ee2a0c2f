//! `[loop]`: the image directory that grants `flexwasm:driver/loop`, and
//! the bounds on its images and loop devices.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoop {
    pub image_dir: Option<String>,
    pub max_images: Option<u64>,
    pub max_total_gib: Option<u64>,
    pub max_attached: Option<u64>,
    pub max_attaches_per_call: Option<u64>,
}

/// The `[loop]` bounds on one driver's images and loop devices.
///
/// Defaults — what `[loop]` with only `image_dir` grants: 64 images,
/// 256 GiB in all, 32 attached at once, 1 new attach per call. Enough for a
/// small node and for the reference `loop` plugin's 1 GiB volumes, and a
/// runaway plugin can neither fill the image filesystem (sparse growth is
/// also checked against its free space) nor use up the node's loop devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopLimits {
    pub max_images: u64,
    /// Sum of the images' apparent sizes.
    pub max_total_bytes: u64,
    /// Loop devices attached from the images at once.
    pub max_attached: u64,
    /// Loop devices one call may attach.
    pub max_attaches_per_call: u64,
}

impl Default for LoopLimits {
    fn default() -> Self {
        LoopLimits {
            max_images: 64,
            max_total_bytes: 256 << 30,
            max_attached: 32,
            max_attaches_per_call: 1,
        }
    }
}

/// `[loop]`, checked: the absolute image dir (a relative one is under
/// `state_dir`) and the bounds.
pub(super) fn validate(l: RawLoop, state_dir: &Path) -> Result<(PathBuf, LoopLimits), String> {
    let dir = l
        .image_dir
        .ok_or_else(|| "loop.image_dir is required when [loop] is granted".to_string())?;
    let dir = image_dir(&dir, state_dir)?;
    let defaults = LoopLimits::default();
    let bound = |key: &str, v: Option<u64>, hi: u64, default: u64| match v {
        None => Ok(default),
        Some(v) if (1..=hi).contains(&v) => Ok(v),
        Some(v) => Err(format!("loop.{key} = {v} is out of range 1..={hi}")),
    };
    let limits = LoopLimits {
        max_images: bound("max_images", l.max_images, 65536, defaults.max_images)?,
        max_total_bytes: bound(
            "max_total_gib",
            l.max_total_gib,
            1 << 20,
            defaults.max_total_bytes >> 30,
        )? << 30,
        max_attached: bound("max_attached", l.max_attached, 16384, defaults.max_attached)?,
        max_attaches_per_call: bound(
            "max_attaches_per_call",
            l.max_attaches_per_call,
            64,
            defaults.max_attaches_per_call,
        )?,
    };
    Ok((dir, limits))
}

fn image_dir(dir: &str, state_dir: &Path) -> Result<PathBuf, String> {
    let p = Path::new(dir);
    if dir.is_empty()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "loop.image_dir '{dir}' must be a directory path without '..'"
        ));
    }
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        state_dir.join(p)
    };
    if full == Path::new("/") {
        return Err("loop.image_dir must not be /".into());
    }
    Ok(full)
}
