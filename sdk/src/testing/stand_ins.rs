//! The stand-ins themselves: one module per WIT import, each function with
//! the signature and error type of the generated import it replaces (see
//! `crate::imports`), answering from this thread's [`World`](super::World)
//! as the host's `host/src/capabilities/*` would.

/// `flexwasm:driver/log`.
pub(crate) mod log {
    use super::super::{LogLine, with};
    use crate::bindings::flexwasm::driver::log::Level;

    /// What the host keeps of a call's log (`[limits] output_kib`, 64 by
    /// default), and what each line costs on top of its text.
    const CAP_BYTES: usize = 64 * 1024;
    const LINE_OVERHEAD: usize = 64;

    pub(crate) fn log(level: Level, message: &str) {
        let name = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        // Captured by the test harness: shown when the test fails.
        eprintln!("flexwasm-sdk log [{name}] {message}");
        with(|world| {
            let cost = message.len() + LINE_OVERHEAD;
            if world.log_bytes + cost > CAP_BYTES {
                world.log_dropped = world.log_dropped.saturating_add(1);
                return;
            }
            world.log_bytes += cost;
            world.log.push(LogLine {
                level,
                message: message.to_owned(),
            });
        });
    }
}

/// `flexwasm:driver/state`, with the host's key rules and quota
/// accounting (`host/src/state.rs`).
pub(crate) mod state {
    use super::super::{World, with};
    use crate::bindings::flexwasm::driver::state::StateError;

    const MAX_KEY_BYTES: usize = 256;
    /// The filesystem block the stand-in charges in.
    const BLOCK: u64 = 4096;
    /// The host's charge for an entry's inode and directory entry.
    const ENTRY_OVERHEAD_BYTES: u64 = 2048;
    /// The host's record: a 6-byte magic, the key's length (4 bytes), the
    /// key, the value.
    const RECORD_HEADER: u64 = 10;

    fn check_key(key: &str) -> Result<(), StateError> {
        let problem = if key.is_empty() {
            "empty".to_owned()
        } else if key.len() > MAX_KEY_BYTES {
            format!("{} bytes long", key.len())
        } else {
            return Ok(());
        };
        Err(StateError::InvalidKey(format!(
            "state key is {problem}; keys must be 1 to 256 bytes"
        )))
    }

    fn cost(key: &str, value: &[u8]) -> u64 {
        let record = RECORD_HEADER + key.len() as u64 + value.len() as u64;
        record.div_ceil(BLOCK) * BLOCK + ENTRY_OVERHEAD_BYTES
    }

    fn write(world: &mut World, key: &str, value: &[u8]) -> Result<(), StateError> {
        let others: u64 = world
            .state
            .iter()
            .filter(|(k, _)| k.as_str() != key)
            .map(|(k, v)| cost(k, v))
            .sum();
        let entries = world.state.keys().filter(|k| k.as_str() != key).count() + 1;
        let needed = others + cost(key, value);
        if needed > world.state_quota {
            return Err(StateError::QuotaExceeded(format!(
                "storing this value would bring the state store to {} on disk, over its quota \
                 of {} ({entries} entries; each costs its disk blocks, at least one \
                 {BLOCK}-byte block however short the value, plus {ENTRY_OVERHEAD_BYTES} bytes \
                 for its inode and directory entry); delete keys no longer needed, or raise \
                 [state] quota_kib in the driver's policy",
                human_bytes(needed),
                human_bytes(world.state_quota)
            )));
        }
        world.state.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    pub(crate) fn get(key: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_key(key)?;
        Ok(with(|world| world.state.get(key).cloned()))
    }

    pub(crate) fn set(key: &str, value: &[u8]) -> Result<(), StateError> {
        check_key(key)?;
        with(|world| write(world, key, value))
    }

    pub(crate) fn delete(key: &str) -> Result<(), StateError> {
        check_key(key)?;
        with(|world| world.state.remove(key));
        Ok(())
    }

    pub(crate) fn list_keys(prefix: &str) -> Result<Vec<String>, StateError> {
        Ok(with(|world| {
            world
                .state
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect()
        }))
    }

    pub(crate) fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        check_key(key)?;
        with(|world| {
            if world.state.get(key).map(Vec::as_slice) != expected {
                return Ok(false);
            }
            match new {
                Some(value) => write(world, key, value)?,
                None => {
                    world.state.remove(key);
                }
            }
            Ok(true)
        })
    }

    /// As the host writes sizes in its messages.
    pub(crate) fn human_bytes(n: u64) -> String {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if n < 1024 {
            return format!("{n} bytes");
        }
        let mut value = n as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `flexwasm:driver/config`.
pub(crate) mod config {
    use super::super::with;
    use crate::bindings::flexwasm::driver::config::ConfigEntry;

    pub(crate) fn get(key: &str) -> Result<Option<ConfigEntry>, String> {
        with(|world| world.config.get(key).cloned().transpose())
    }

    pub(crate) fn keys() -> Vec<String> {
        with(|world| world.config.keys().cloned().collect())
    }

    /// Every secret config value the host would look for in an image name
    /// (text, each item of a list, a number as written; not booleans).
    pub(crate) fn secrets() -> Vec<String> {
        use crate::bindings::flexwasm::driver::config::ConfigValue;
        with(|world| {
            let mut out = Vec::new();
            for entry in world.config.values().flatten().filter(|e| e.secret) {
                match &entry.value {
                    ConfigValue::Text(t) => out.push(t.clone()),
                    ConfigValue::Integer(i) => out.push(i.to_string()),
                    ConfigValue::TextList(l) => out.extend(l.iter().cloned()),
                    ConfigValue::Boolean(_) => {}
                }
            }
            out
        })
    }
}

/// `flexwasm:driver/devices`: seeded devices and the attached loop images.
pub(crate) mod devices {
    use super::super::{LOOP_IMAGE_DIR, World, with};
    use crate::DeviceLocator;
    use crate::bindings::flexwasm::driver::devices::BlockDevice;

    fn all(world: &World) -> Vec<BlockDevice> {
        let mut out = world.devices.clone();
        for (name, image) in &world.images {
            if let Some(device) = &image.device {
                out.push(BlockDevice {
                    path: device.clone(),
                    size_bytes: image.size_bytes,
                    read_only: false,
                    links: Vec::new(),
                    serial: None,
                    wwn: None,
                    loop_backing_file: Some(format!("{LOOP_IMAGE_DIR}/{name}")),
                });
            }
        }
        out
    }

    /// As the host compares them: `naa.600…`, `0x600…` and bare hex alike.
    fn normalise_wwn(w: &str) -> String {
        let w = w.trim().to_ascii_lowercase();
        let w = w.strip_prefix("0x").unwrap_or(&w);
        let w = w.strip_prefix("naa.").unwrap_or(w);
        w.to_owned()
    }

    /// A path names a device by its own path or one of its links (the
    /// host resolves symlinks; these are the stand-in's symlinks).
    fn by_path(devices: Vec<BlockDevice>, path: &str) -> Option<BlockDevice> {
        devices
            .into_iter()
            .find(|d| d.path == path || d.links.iter().any(|l| l == path))
    }

    pub(crate) fn list_devices() -> Vec<BlockDevice> {
        with(|world| all(world))
    }

    pub(crate) fn get(path: &str) -> Option<BlockDevice> {
        with(|world| by_path(all(world), path))
    }

    pub(crate) fn find(locator: &DeviceLocator) -> Option<BlockDevice> {
        with(|world| {
            let devices = all(world);
            match locator {
                DeviceLocator::Path(p) => by_path(devices, p),
                // Only the udev link farms, as on the host.
                DeviceLocator::Link(l) if l.starts_with("/dev/disk/") => by_path(devices, l),
                DeviceLocator::Link(_) => None,
                DeviceLocator::LoopImage(name) => {
                    let device = world.images.get(name)?.device.clone()?;
                    by_path(devices, &device)
                }
                DeviceLocator::Serial(s) => devices
                    .into_iter()
                    .find(|d| d.serial.as_deref().map(str::trim) == Some(s.trim())),
                DeviceLocator::Wwn(w) => {
                    let want = normalise_wwn(w);
                    devices.into_iter().find(|d| {
                        d.wwn.as_deref().map(normalise_wwn).as_deref() == Some(want.as_str())
                    })
                }
                DeviceLocator::LoopBackingFile(f) => devices
                    .into_iter()
                    .find(|d| d.loop_backing_file.as_deref() == Some(f.as_str())),
            }
        })
    }

    /// No time passes: the device is there now or never comes.
    pub(crate) fn wait_for(locator: &DeviceLocator, _timeout_ms: u32) -> Option<BlockDevice> {
        find(locator)
    }
}

/// `flexwasm:driver/loop`, with the host's name rules, sizes and `[loop]`
/// limits (`host/src/capabilities/loop_images.rs`).
pub(crate) mod loop_ {
    use super::super::{LOOP_IMAGE_DIR, LoopImage, World, with};
    use super::state::human_bytes;
    use crate::bindings::flexwasm::driver::loop_::LoopError;

    const MAX_NAME_BYTES: usize = 128;
    const MAX_IMAGE_BYTES: u64 = 16 << 40;

    fn failed(message: String) -> LoopError {
        LoopError::Failed(message)
    }

    fn check_name(name: &str) -> Result<(), LoopError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME_BYTES
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(LoopError::InvalidName(format!(
                "image name '{}' is not allowed: use 1-128 letters, digits, '.', '_' or '-', \
                 starting with a letter, digit or '_'",
                name.chars().take(MAX_NAME_BYTES).collect::<String>()
            )));
        }
        // The host folds both sides to their letters and digits (and looks
        // for more forms); a secret of fewer than 4 of them is not looked
        // for.
        let folded_name = fold(name);
        if super::config::secrets()
            .iter()
            .map(|s| fold(s))
            .any(|s| s.chars().count() >= 4 && folded_name.contains(&s))
        {
            return Err(LoopError::InvalidName(
                "image name holds a secret (a [config] secret or one kubelet passed): every \
                 user of the node can read an attached image's name"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    fn fold(text: &str) -> String {
        text.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    }

    fn not_found(name: &str) -> LoopError {
        LoopError::NotFound(format!("image {name} does not exist"))
    }

    fn check_total(world: &World, added: u64) -> Result<(), LoopError> {
        let apparent: u64 = world.images.values().map(|i| i.size_bytes).sum();
        let total = apparent.saturating_add(added);
        let limits = world.loop_limits;
        if total > limits.max_total_bytes {
            return Err(failed(format!(
                "the images in {LOOP_IMAGE_DIR} would total {} ({} now, {} more), over this \
                 driver's max_total_gib = {} (sizes count in full: images are sparse and fill \
                 up later); remove images no longer needed, use a smaller size, or raise [loop] \
                 max_total_gib in the driver's policy",
                human_bytes(total),
                human_bytes(apparent),
                human_bytes(added),
                limits.max_total_bytes >> 30
            )));
        }
        Ok(())
    }

    pub(crate) fn create_image(name: &str, size_bytes: u64) -> Result<u64, LoopError> {
        check_name(name)?;
        if size_bytes == 0 || size_bytes > MAX_IMAGE_BYTES {
            return Err(failed(format!(
                "image size {size_bytes} is out of range (1 byte to 16 TiB)"
            )));
        }
        with(|world| {
            if let Some(existing) = world.images.get(name) {
                return Ok(existing.size_bytes);
            }
            let count = world.images.len() as u64;
            if count >= world.loop_limits.max_images {
                return Err(failed(format!(
                    "the image dir {LOOP_IMAGE_DIR} holds {count} images, the most this driver \
                     may have (max_images = {}); remove images no longer needed, or raise \
                     [loop] max_images in the driver's policy",
                    world.loop_limits.max_images
                )));
            }
            check_total(world, size_bytes)?;
            world.images.insert(
                name.to_owned(),
                LoopImage {
                    size_bytes,
                    device: None,
                },
            );
            Ok(size_bytes)
        })
    }

    pub(crate) fn grow_image(name: &str, size_bytes: u64) -> Result<u64, LoopError> {
        if size_bytes > MAX_IMAGE_BYTES {
            return Err(failed(format!("image size {size_bytes} is over 16 TiB")));
        }
        check_name(name)?;
        with(|world| {
            let len = world
                .images
                .get(name)
                .ok_or_else(|| not_found(name))?
                .size_bytes;
            if len >= size_bytes {
                return Ok(len);
            }
            check_total(world, size_bytes - len)?;
            if let Some(image) = world.images.get_mut(name) {
                image.size_bytes = size_bytes;
            }
            Ok(size_bytes)
        })
    }

    pub(crate) fn image_size(name: &str) -> Result<Option<u64>, LoopError> {
        check_name(name)?;
        Ok(with(|world| world.images.get(name).map(|i| i.size_bytes)))
    }

    pub(crate) fn remove_image(name: &str) -> Result<(), LoopError> {
        check_name(name)?;
        with(|world| {
            if let Some(device) = world.images.get(name).and_then(|i| i.device.clone()) {
                return Err(failed(format!(
                    "image {name} is attached to {device}; detach it first"
                )));
            }
            world.images.remove(name);
            Ok(())
        })
    }

    pub(crate) fn attach(name: &str) -> Result<String, LoopError> {
        check_name(name)?;
        with(|world| {
            let image = world.images.get(name).ok_or_else(|| not_found(name))?;
            if let Some(device) = &image.device {
                return Ok(device.clone());
            }
            let limits = world.loop_limits;
            if world.attached_this_call >= limits.max_attaches_per_call {
                return Err(failed(format!(
                    "this call has attached {} loop device(s) already, the most one call may \
                     (max_attaches_per_call = {}; a call is for one volume); attach image \
                     {name} in a call of its own, or raise [loop] max_attaches_per_call in the \
                     driver's policy (in a native test, flexwasm_sdk::testing::new_call() \
                     starts the next call)",
                    world.attached_this_call, limits.max_attaches_per_call
                )));
            }
            let in_use: Vec<&str> = world
                .images
                .values()
                .filter_map(|i| i.device.as_deref())
                .collect();
            if in_use.len() as u64 >= limits.max_attached {
                return Err(failed(format!(
                    "{} loop devices are attached from this driver's images in {LOOP_IMAGE_DIR} \
                     already, the most it may have (max_attached = {}); detach volumes no longer \
                     in use, or raise [loop] max_attached in the driver's policy",
                    in_use.len(),
                    limits.max_attached
                )));
            }
            let device = (0u64..)
                .map(|n| format!("/dev/loop{n}"))
                .find(|d| {
                    !in_use.contains(&d.as_str()) && !world.devices.iter().any(|x| &x.path == d)
                })
                .unwrap_or_default();
            world.attached_this_call += 1;
            if let Some(image) = world.images.get_mut(name) {
                image.device = Some(device.clone());
            }
            Ok(device)
        })
    }

    pub(crate) fn find(name: &str) -> Result<Option<String>, LoopError> {
        check_name(name)?;
        Ok(with(|world| {
            world.images.get(name).and_then(|i| i.device.clone())
        }))
    }

    pub(crate) fn detach(name: &str) -> Result<(), LoopError> {
        check_name(name)?;
        with(|world| {
            if let Some(image) = world.images.get_mut(name) {
                image.device = None;
            }
        });
        Ok(())
    }

    pub(crate) fn refresh(name: &str) -> Result<(), LoopError> {
        check_name(name)?;
        with(|world| match world.images.get(name) {
            None => Err(not_found(name)),
            Some(image) if image.device.is_none() => {
                Err(LoopError::NotFound(format!("image {name} is not attached")))
            }
            Some(_) => Ok(()),
        })
    }
}

/// Outbound HTTP: the test's handler, if any.
pub(crate) mod http {
    use super::super::with;
    use crate::http::{MAX_RESPONSE_BYTES, Request, Response};
    use crate::{Error, Result};

    /// `shown` is the URL as messages show it (no query).
    pub(crate) fn send(request: Request, shown: String) -> Result<Response> {
        let handler = with(|world| {
            world.http_requests.push(request.clone());
            world.http_handler.take()
        });
        let Some(mut handler) = handler else {
            return Err(Error::Failure(format!(
                "http is only available inside a plugin (a wasm32-wasip2 component): {} {shown} \
                 was not sent (in a native test, flexwasm_sdk::testing::http_handler answers \
                 requests)",
                request.method()
            )));
        };
        let answer = handler(&request);
        with(|world| {
            // Unless the handler set another one meanwhile.
            world.http_handler.get_or_insert(handler);
        });
        let mut response = answer?;
        if response.body.len() > MAX_RESPONSE_BYTES {
            return Err(Error::Failure(format!(
                "the response from {shown} is larger than {} MiB, the most the SDK reads",
                MAX_RESPONSE_BYTES >> 20
            )));
        }
        response.url = shown;
        Ok(response)
    }
}
