//! In-memory stand-ins for the host, so plugin logic runs in a native
//! `cargo test`. Native builds only (`cfg(not(target_arch = "wasm32"))`).
//!
//! Built for anything but wasm32, the SDK's [`log`](crate::log),
//! [`state`](crate::state), [`config`](crate::config),
//! [`devices`](crate::devices), [`loop_images`](crate::loop_images) and
//! [`http`](crate::http) modules talk to the stand-ins here instead of the
//! host, automatically: a driver's methods can be called straight from a
//! unit test. This module seeds what the host would provide (config values,
//! block devices, HTTP answers) and shows what the driver did (log lines,
//! state, loop images, requests sent).
//!
//! ```
//! use flexwasm_sdk::prelude::*;
//! use flexwasm_sdk::{log, state, testing};
//!
//! fn remember_pod(pod_volume_dir: &str, options: &Options) -> Result<()> {
//!     log::info(format!("mounting {} at {pod_volume_dir}", options.volume_name));
//!     state::set(&format!("mount/{pod_volume_dir}"), options.volume_name.as_bytes())
//! }
//!
//! // In a #[test]:
//! testing::reset();
//! let options = Options { volume_name: "pv-1".into(), ..Options::default() };
//! remember_pod("/pods/a/volumes/acme~scratch/v", &options)?;
//! assert!(testing::logged("mounting pv-1"));
//! assert_eq!(
//!     state::get_string("mount//pods/a/volumes/acme~scratch/v")?.as_deref(),
//!     Some("pv-1")
//! );
//! # Ok::<(), flexwasm_sdk::Error>(())
//! ```
//!
//! # One host per thread
//!
//! Everything here is thread-local: each test runs on its own thread (as
//! `cargo test` runs them), so tests running in parallel never see each
//! other's state, and each starts with an empty host: no config, no
//! devices, no state, no images. [`reset`] empties it again (for a test
//! that reuses its thread, or wants a clean start midway). A thread a test
//! spawns has a host of its own.
//!
//! # How close to the host
//!
//! Each stand-in answers as the host does, with its messages, for what a
//! driver can get wrong:
//!
//! - **state**: keys of 1 to 256 bytes (`invalid-key` otherwise), and the
//!   quota the host charges: each entry costs its record (key and value plus
//!   10 bytes) rounded up to 4 KiB blocks, plus 2 KiB, against the default
//!   `[state]` quota of 4096 KiB ([`set_state_quota_kib`] changes it), so
//!   a driver that keeps one entry per volume and never deletes them runs
//!   out here as it would on a node.
//! - **loop images**: the host's name rules (1-128 of `[A-Za-z0-9._-]`,
//!   starting with a letter, digit or `_`), sizes of 1 byte to 16 TiB,
//!   create and grow idempotent and never shrinking, remove refused while
//!   attached, attach returning the same device when attached already, the
//!   `[loop]` limits ([`set_loop_limits`]; the host's defaults: 64 images,
//!   256 GiB in all, 32 attached, 1 attach per call — [`new_call`] starts
//!   the next call), and names holding a config secret refused. Attached
//!   images get fake devices `/dev/loop0`, `/dev/loop1`… (the lowest free
//!   number), which also show up in [`devices`](crate::devices) with their
//!   backing file under [`LOOP_IMAGE_DIR`].
//! - **devices**: the devices you [`add_device`] plus the attached loop
//!   images; `get` and `Path`/`Link` locators match a device's path or one
//!   of its links (links only under `/dev/disk/`, as on the host), serials
//!   match trimmed, WWNs in any of their written forms (`naa.`, `0x`, any
//!   case).
//! - **config**: typed values and secrets as the operator writes them
//!   ([`set_config`], [`set_secret_config`]), and a `file = …` entry the
//!   host cannot read ([`set_config_unreadable`]).
//! - **log**: lines kept in order ([`log_lines`], [`logged`]) and also
//!   printed to stderr, which the test harness shows when a test fails. The
//!   host keeps at most 64 KiB per call (each line costs 64 bytes more than
//!   its text) and counts the rest; so does the stand-in ([`log_dropped`]).
//! - **http**: a request goes to the handler you set ([`http_handler`]);
//!   without one, `send` fails with the message native builds always gave.
//!   Every request is kept ([`http_requests`]).
//!
//! What they do not do: no time passes (`devices::wait_for` answers at once,
//! as if its device were there or never came), nothing is durable or shared
//! between processes (no concurrency to race with: `compare_and_swap` always
//! sees the value the test left), the filesystem reserve the host keeps for
//! state and images is not modelled, secrets are matched as the letters and
//! digits of the whole value (the host also looks for halves, base64 and
//! hex), and kubelet's `kubernetes.io/secret/*` values, which only the host
//! sees, are not checked at all. Nothing checks the grant: a plugin that
//! uses `state` needs `[state]` in its policy all the same, and the plans a
//! driver returns are checked by the host only (`tests/` in the flexwasm
//! repository run plugins through the real host). The raw
//! [`bindings`](crate::bindings) still panic natively: call the typed
//! modules.

pub(crate) mod stand_ins;

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::bindings::flexwasm::driver::config::{ConfigEntry, ConfigValue};
use crate::config::Value;
use crate::http::{Request, Response};
use crate::{DeviceLocator, Result};

pub use crate::bindings::flexwasm::driver::log::Level;
#[doc(inline)]
pub use crate::devices::BlockDevice;

/// Where the stand-in keeps loop images: the backing file of an attached
/// image's fake loop device is `LOOP_IMAGE_DIR/<name>`.
pub const LOOP_IMAGE_DIR: &str = "/var/lib/flexwasm/test~driver/images";

/// One line the driver logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
}

/// A loop image as the stand-in holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopImage {
    /// Its apparent size.
    pub size_bytes: u64,
    /// The fake loop device it is attached to, e.g. `/dev/loop0`.
    pub device: Option<String>,
}

/// The grant's `[loop]` bounds; `Default` is the host's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopLimits {
    pub max_images: u64,
    /// Sum of the images' apparent sizes (`max_total_gib`, in bytes).
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

/// The `[state]` quota when the policy gives none (`quota_kib = 4096`).
pub const DEFAULT_STATE_QUOTA_KIB: u64 = 4096;

type HttpHandler = Box<dyn FnMut(&Request) -> Result<Response>>;

/// The host of one thread.
pub(crate) struct World {
    pub(crate) log: Vec<LogLine>,
    /// Bytes the log holds this call, as the host counts them.
    pub(crate) log_bytes: usize,
    pub(crate) log_dropped: usize,
    pub(crate) state: BTreeMap<String, Vec<u8>>,
    pub(crate) state_quota: u64,
    /// `Err`: a `file = …` entry the host cannot read, and why.
    pub(crate) config: BTreeMap<String, std::result::Result<ConfigEntry, String>>,
    pub(crate) devices: Vec<BlockDevice>,
    pub(crate) images: BTreeMap<String, LoopImage>,
    pub(crate) loop_limits: LoopLimits,
    pub(crate) attached_this_call: u64,
    /// Taken out while it runs, so it may call the stand-ins itself.
    pub(crate) http_handler: Option<HttpHandler>,
    pub(crate) http_requests: Vec<Request>,
}

impl Default for World {
    fn default() -> Self {
        World {
            log: Vec::new(),
            log_bytes: 0,
            log_dropped: 0,
            state: BTreeMap::new(),
            state_quota: DEFAULT_STATE_QUOTA_KIB * 1024,
            config: BTreeMap::new(),
            devices: Vec::new(),
            images: BTreeMap::new(),
            loop_limits: LoopLimits::default(),
            attached_this_call: 0,
            http_handler: None,
            http_requests: Vec::new(),
        }
    }
}

thread_local! {
    static WORLD: RefCell<World> = RefCell::new(World::default());
}

/// Runs `f` on this thread's host. Never re-entered: no stand-in calls
/// back into the SDK while it holds the world.
pub(crate) fn with<R>(f: impl FnOnce(&mut World) -> R) -> R {
    WORLD.with(|world| f(&mut world.borrow_mut()))
}

/// Empties this thread's host: no config, devices, state, images, log
/// lines, requests or HTTP handler; default quota and limits.
pub fn reset() {
    with(|world| *world = World::default());
}

/// Starts the next call: what the host bounds per call (loop devices
/// attached, log bytes kept) starts from zero again. Everything durable
/// (state, images and their devices) and everything seeded stays; so do
/// the log lines and requests so far.
pub fn new_call() {
    with(|world| {
        world.attached_this_call = 0;
        world.log_bytes = 0;
    });
}

// ---- log ----

/// Every line logged on this thread since it started (or [`reset`]), in
/// order.
pub fn log_lines() -> Vec<LogLine> {
    with(|world| world.log.clone())
}

/// Whether a logged line contains `text`.
pub fn logged(text: &str) -> bool {
    with(|world| world.log.iter().any(|line| line.message.contains(text)))
}

/// Lines the host would have dropped: over 64 KiB in one call.
pub fn log_dropped() -> usize {
    with(|world| world.log_dropped)
}

// ---- config ----

/// Configures `key` as the operator would in `[config]`: text, a whole
/// number, a boolean or a list of strings (`"x"`, `8443`, `true`,
/// `vec!["a", "b"]`).
pub fn set_config(key: &str, value: impl Into<Value>) {
    set_config_entry(key, value.into(), false);
}

/// Configures `key` as a value marked `secret = true`.
pub fn set_secret_config(key: &str, value: impl Into<Value>) {
    set_config_entry(key, value.into(), true);
}

/// Configures `key` as a `file = …` entry the host cannot read; `why` is
/// the host's reason, e.g. `"/etc/acme/token: No such file or directory"`.
/// Reading it fails as on a node: "config value "key": the host cannot use
/// its file: why".
pub fn set_config_unreadable(key: &str, why: &str) {
    let message = format!("config value {key:?}: the host cannot use its file: {why}");
    with(|world| world.config.insert(key.to_owned(), Err(message)));
}

/// Removes `key` from the configuration.
pub fn remove_config(key: &str) {
    with(|world| world.config.remove(key));
}

fn set_config_entry(key: &str, value: Value, secret: bool) {
    let value = match value {
        Value::Text(t) => ConfigValue::Text(t),
        Value::Integer(i) => ConfigValue::Integer(i),
        Value::Boolean(b) => ConfigValue::Boolean(b),
        Value::List(l) => ConfigValue::TextList(l),
    };
    with(|world| {
        world
            .config
            .insert(key.to_owned(), Ok(ConfigEntry { value, secret }))
    });
}

// ---- state ----

/// Everything in the state store, by key.
pub fn state_entries() -> BTreeMap<String, Vec<u8>> {
    with(|world| world.state.clone())
}

/// Sets the `[state]` quota (`quota_kib`).
pub fn set_state_quota_kib(kib: u64) {
    with(|world| world.state_quota = kib.saturating_mul(1024));
}

// ---- devices ----

/// A block device at `path` of `size_bytes`, with nothing else known about
/// it; set its `serial`, `wwn` or `links` before [`add_device`].
pub fn block_device(path: &str, size_bytes: u64) -> BlockDevice {
    BlockDevice {
        path: path.to_owned(),
        size_bytes,
        read_only: false,
        links: Vec::new(),
        serial: None,
        wwn: None,
        loop_backing_file: None,
    }
}

/// Makes `device` present on the node (replacing one at the same path),
/// e.g. what a backend attached.
pub fn add_device(device: BlockDevice) {
    with(|world| {
        world.devices.retain(|d| d.path != device.path);
        world.devices.push(device);
    });
}

/// Removes the device at `path` (not an attached loop image: detach it).
pub fn remove_device(path: &str) {
    with(|world| world.devices.retain(|d| d.path != path));
}

/// The device `locator` names now, as `devices::find` would answer.
pub fn find_device(locator: &DeviceLocator) -> Option<BlockDevice> {
    stand_ins::devices::find(locator)
}

// ---- loop images ----

/// Every loop image, by name.
pub fn loop_images() -> BTreeMap<String, LoopImage> {
    with(|world| world.images.clone())
}

/// Sets the grant's `[loop]` bounds.
pub fn set_loop_limits(limits: LoopLimits) {
    with(|world| world.loop_limits = limits);
}

// ---- http ----

/// Answers every request the driver sends from now on with `handler`
/// (which may look at the method, URL, headers and body). An `Err` stands
/// for a request that got no response (refused, timed out…).
///
/// ```
/// use flexwasm_sdk::{http, testing};
///
/// testing::http_handler(|request| {
///     assert_eq!(request.header_value("authorization"), Some("Bearer t0ken"));
///     Ok(testing::http_response(200, r#"{"id": "vol-7"}"#))
/// });
/// let response = http::Request::get("https://array.example.com/api/v1/volumes/a")
///     .bearer("t0ken")
///     .send()?;
/// assert_eq!(response.text(), r#"{"id": "vol-7"}"#);
/// assert_eq!(testing::http_requests().len(), 1);
/// # Ok::<(), flexwasm_sdk::Error>(())
/// ```
pub fn http_handler(handler: impl FnMut(&Request) -> Result<Response> + 'static) {
    with(|world| world.http_handler = Some(Box::new(handler)));
}

/// A response with `status` and `body` (its `url` is filled in when it is
/// returned for a request).
pub fn http_response(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response {
        status,
        headers: Vec::new(),
        body: body.into(),
        url: String::new(),
    }
}

/// Every request sent, in order (also those no handler answered).
pub fn http_requests() -> Vec<Request> {
    with(|world| world.http_requests.clone())
}

#[cfg(test)]
mod tests;
