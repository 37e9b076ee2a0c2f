//! File-backed loop devices, managed by the host.
//!
//! Images live in one directory chosen by the operator. A driver names an
//! image by its file name (no `/`, no leading `.`), never by a path. Errors
//! name the image.
//!
//! Using this module makes the plugin import `flexwasm:driver/loop`.

use crate::bindings::flexwasm::driver::loop_::LoopError;
use crate::error::describe_loop_error;
use crate::imports::loop_ as host;
use crate::{Error, Result};

/// Creates a sparse image of `size_bytes` unless it exists (an existing image
/// is left as it is). Returns the image's size.
pub fn create_image(name: &str, size_bytes: u64) -> Result<u64> {
    host::create_image(name, size_bytes).map_err(|error| failure("create", name, &error))
}

/// Grows an image to at least `size_bytes` (never shrinks). Returns its size.
pub fn grow_image(name: &str, size_bytes: u64) -> Result<u64> {
    host::grow_image(name, size_bytes).map_err(|error| failure("grow", name, &error))
}

/// The size of an image; `None` if it does not exist.
pub fn image_size(name: &str) -> Result<Option<u64>> {
    host::image_size(name).map_err(|error| failure("read the size of", name, &error))
}

/// Deletes an image; refused while it is attached, fine if it is absent.
pub fn remove_image(name: &str) -> Result<()> {
    host::remove_image(name).map_err(|error| failure("remove", name, &error))
}

/// Attaches an image to a loop device, or finds the one it is attached to.
/// Returns the device, e.g. `/dev/loop3`.
pub fn attach(name: &str) -> Result<String> {
    host::attach(name).map_err(|error| failure("attach", name, &error))
}

/// The loop device an image is attached to, if any.
pub fn find(name: &str) -> Result<Option<String>> {
    host::find(name).map_err(|error| failure("look up the loop device of", name, &error))
}

/// Detaches an image's loop device; fine if it is not attached.
pub fn detach(name: &str) -> Result<()> {
    host::detach(name).map_err(|error| failure("detach", name, &error))
}

/// Makes an attached loop device pick up its image's current size.
pub fn refresh(name: &str) -> Result<()> {
    host::refresh(name).map_err(|error| failure("refresh the loop device of", name, &error))
}

fn failure(operation: &str, name: &str, error: &LoopError) -> Error {
    Error::Failure(format!(
        "cannot {operation} loop image {name:?}: {}",
        describe_loop_error(error)
    ))
}
