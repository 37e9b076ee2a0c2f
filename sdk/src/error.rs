//! The error type every [`Driver`](crate::Driver) method returns.

use std::fmt;

use crate::bindings::flexwasm::driver::loop_::LoopError;
use crate::bindings::flexwasm::driver::state::StateError;
use crate::bindings::flexwasm::driver::types::DriverError;

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a driver call did not succeed.
///
/// The message of a [`Failure`](Error::Failure) ends up in
/// `kubectl describe pod`: say what failed, on what, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The driver does not implement this call; kubelet falls back to its own
    /// behaviour until the next re-probe of the driver.
    NotSupported,
    /// The call failed, with a message for people.
    Failure(String),
}

impl Error {
    /// A [`Failure`](Error::Failure) with `message`.
    pub fn failure(message: impl Into<String>) -> Self {
        Error::Failure(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotSupported => f.write_str("not supported"),
            Error::Failure(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Failure(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::Failure(message.to_owned())
    }
}

impl From<Error> for DriverError {
    fn from(error: Error) -> Self {
        match error {
            Error::NotSupported => DriverError::NotSupported,
            Error::Failure(message) => DriverError::Failure(message),
        }
    }
}

/// Lets `?` work on the raw `state` import; the [`state`](crate::state)
/// wrappers add the key to the message.
impl From<StateError> for Error {
    fn from(error: StateError) -> Self {
        Error::Failure(format!("state store: {}", describe_state_error(&error)))
    }
}

/// Lets `?` work on the raw `loop` import; the
/// [`loop_images`](crate::loop_images) wrappers add the image name to the
/// message.
impl From<LoopError> for Error {
    fn from(error: LoopError) -> Self {
        Error::Failure(format!("loop device: {}", describe_loop_error(&error)))
    }
}

// The generated `Display` impls of the import errors print Rust debug syntax
// (`StateError::Io("...")`), which is no good in `kubectl describe`; these
// give plain words instead.

pub(crate) fn describe_state_error(error: &StateError) -> String {
    match error {
        StateError::InvalidKey(message) => format!("invalid key: {message}"),
        StateError::QuotaExceeded(message) => format!("quota exceeded: {message}"),
        StateError::Io(message) => format!("I/O error: {message}"),
    }
}

pub(crate) fn describe_loop_error(error: &LoopError) -> String {
    match error {
        LoopError::InvalidName(message) => format!("invalid image name: {message}"),
        LoopError::NotFound(message) => format!("not found: {message}"),
        LoopError::Failed(message) => message.clone(),
    }
}

/// Returns early from a driver method with [`Error::Failure`], the message
/// built like `format!`.
///
/// ```
/// # use flexwasm_sdk::{fail, Result};
/// fn check(size: u64) -> Result<u64> {
///     if size == 0 {
///         fail!("volume size must be positive, got {size}");
///     }
///     Ok(size)
/// }
/// assert!(check(0).is_err());
/// ```
#[macro_export]
macro_rules! fail {
    ($($format:tt)+) => {
        return ::core::result::Result::Err($crate::Error::Failure(::std::format!($($format)+)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_make_failures() {
        assert_eq!(Error::from("boom"), Error::Failure("boom".into()));
        assert_eq!(Error::from(String::from("boom")), Error::failure("boom"));
        assert_eq!(Error::NotSupported.to_string(), "not supported");
        assert_eq!(Error::failure("disk gone").to_string(), "disk gone");
    }

    #[test]
    fn import_errors_read_as_plain_words() {
        let error = Error::from(StateError::QuotaExceeded("store is full".into()));
        assert_eq!(
            error.to_string(),
            "state store: quota exceeded: store is full"
        );
        let error = Error::from(LoopError::NotFound("a.img".into()));
        assert_eq!(error.to_string(), "loop device: not found: a.img");
    }

    #[test]
    fn errors_map_onto_the_wit_variant() {
        assert_eq!(
            DriverError::from(Error::NotSupported),
            DriverError::NotSupported
        );
        assert_eq!(
            DriverError::from(Error::failure("x")),
            DriverError::Failure("x".into())
        );
    }

    fn failing(flag: bool) -> Result<()> {
        if flag {
            fail!("flag {} was set", "f");
        }
        Ok(())
    }

    #[test]
    fn fail_returns_early() {
        assert_eq!(failing(true), Err(Error::failure("flag f was set")));
        assert_eq!(failing(false), Ok(()));
    }
}
