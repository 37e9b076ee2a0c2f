//! Values the operator configured for this driver: the `[config]` table of
//! the driver's grant policy (endpoint, region, credentials…), typed as the
//! operator wrote them.
//!
//! ```toml
//! [config]
//! endpoint = "https://array.example.com:8443"
//! port = 8443
//! thin = true
//! pools = ["gold", "silver"]
//! token = { file = "/etc/acme/token", secret = true }  # read at every call
//! ```
//!
//! Values the operator marked `secret = true` come with that mark
//! ([`Entry::secret`]); read them with [`secret`], which hands back a
//! [`Secret`] that never shows its value in `Debug` or `Display`. The host
//! scrubs secret values from its logs, messages and captured output anyway,
//! but a driver must not rely on that: never log a token or put it in an
//! error message.
//!
//! ```no_run
//! use flexwasm_sdk::{Result, config};
//!
//! fn connect() -> Result<()> {
//!     // "the driver's configuration has no \"endpoint\": …" if it is missing.
//!     let endpoint = config::require("endpoint")?;
//!     let port = config::integer("port")?.unwrap_or(443);
//!     let token = config::require_secret("token")?;
//!     let _authorization = format!("Bearer {}", token.expose());
//!     # let _ = (endpoint, port);
//!     Ok(())
//! }
//! ```
//!
//! Using this module makes the plugin import `flexwasm:driver/config`.

use std::fmt;

use crate::bindings::flexwasm::driver::config::ConfigValue;
use crate::imports::config as host;
use crate::{Error, Result};

/// A configured value, typed as the operator wrote it. A `file = …` entry
/// is its file's text.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Integer(i64),
    Boolean(bool),
    List(Vec<String>),
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Value::Integer(number)
    }
}

/// Integer literals (`8443`) are `i32` unless told otherwise.
impl From<i32> for Value {
    fn from(number: i32) -> Self {
        Value::Integer(number.into())
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Value::Boolean(flag)
    }
}

impl From<Vec<String>> for Value {
    fn from(items: Vec<String>) -> Self {
        Value::List(items)
    }
}

impl From<Vec<&str>> for Value {
    fn from(items: Vec<&str>) -> Self {
        Value::List(items.into_iter().map(str::to_owned).collect())
    }
}

impl<const N: usize> From<[&str; N]> for Value {
    fn from(items: [&str; N]) -> Self {
        Value::List(items.into_iter().map(str::to_owned).collect())
    }
}

/// One configured entry.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Value,
    /// The operator marked it `secret = true`.
    pub secret: bool,
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(t) => f.debug_tuple("Text").field(t).finish(),
            Value::Integer(i) => f.debug_tuple("Integer").field(i).finish(),
            Value::Boolean(b) => f.debug_tuple("Boolean").field(b).finish(),
            Value::List(l) => f.debug_tuple("List").field(l).finish(),
        }
    }
}

/// A secret entry's value shows as `<secret>`.
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Entry");
        if self.secret {
            s.field("value", &format_args!("<secret>"));
        } else {
            s.field("value", &self.value);
        }
        s.field("secret", &self.secret).finish()
    }
}

/// A secret text value. `Debug` and `Display` print `<secret>`; only
/// [`Secret::expose`] gives the value, so it cannot reach a log line or an
/// error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that needs it (an `Authorization`
    /// header, a login request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<secret>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// The entry `key`: `None` if the operator did not configure it; a
/// [`Failure`](Error::Failure) saying why if it is configured but the host
/// cannot produce it (e.g. its file cannot be read).
pub fn entry(key: &str) -> Result<Option<Entry>> {
    let entry = host::get(key).map_err(Error::Failure)?;
    Ok(entry.map(|e| Entry {
        value: match e.value {
            ConfigValue::Text(t) => Value::Text(t),
            ConfigValue::Integer(i) => Value::Integer(i),
            ConfigValue::Boolean(b) => Value::Boolean(b),
            ConfigValue::TextList(l) => Value::List(l),
        },
        secret: e.secret,
    }))
}

/// The value of `key` as text (a number or `true`/`false` as written);
/// `None` if not configured. A list is an error: use [`list`]. A value the
/// operator marked secret is returned too, with a warning in the log: read
/// it with [`secret`], so it cannot be printed by accident.
pub fn get(key: &str) -> Result<Option<String>> {
    let Some(entry) = entry(key)? else {
        return Ok(None);
    };
    if entry.secret {
        crate::log::warn(format!(
            "config value {key:?} is secret; the driver reads it with config::get, which \
             returns it as plain text (config::secret keeps it out of logs and messages)"
        ));
    }
    text_of(key, entry).map(Some)
}

/// The value of `key` as text; a [`Failure`](Error::Failure) naming the key
/// and telling the operator where to set it when it is absent or blank.
/// The value is returned as configured (not trimmed).
pub fn require(key: &str) -> Result<String> {
    required(key, get(key)?)
}

/// The value of `key` as a whole number: an integer, or text holding one.
pub fn integer(key: &str) -> Result<Option<i64>> {
    entry(key)?.map(|e| integer_of(key, e)).transpose()
}

/// The value of `key` as `true`/`false`: a boolean, or text holding one.
pub fn boolean(key: &str) -> Result<Option<bool>> {
    entry(key)?.map(|e| boolean_of(key, e)).transpose()
}

/// The value of `key` as a list of strings: a list, or comma-separated text
/// (items trimmed, empty ones dropped).
pub fn list(key: &str) -> Result<Option<Vec<String>>> {
    entry(key)?.map(|e| list_of(key, e)).transpose()
}

/// The text value of `key`, as a [`Secret`]. If the operator did not mark
/// it `secret = true`, this logs a warning: the host then does not scrub it
/// from logs and messages.
pub fn secret(key: &str) -> Result<Option<Secret>> {
    let Some(entry) = entry(key)? else {
        return Ok(None);
    };
    if !entry.secret {
        crate::log::warn(format!(
            "config value {key:?} holds a secret but is not marked secret = true in the \
             driver's policy: the host will not scrub it from logs and messages"
        ));
    }
    text_of(key, entry).map(|t| Some(Secret(t)))
}

/// Like [`secret`], but absent or blank is a [`Failure`](Error::Failure)
/// telling the operator where to set it.
pub fn require_secret(key: &str) -> Result<Secret> {
    let value = secret(key)?.map(|s| s.0);
    required(key, value).map(Secret)
}

/// Every configured key, sorted.
pub fn keys() -> Vec<String> {
    host::keys()
}

fn required(key: &str, value: Option<String>) -> Result<String> {
    match value {
        Some(value) if !value.trim().is_empty() => Ok(value),
        Some(_) => Err(Error::Failure(format!(
            "the driver's configuration value {key:?} is empty: the operator sets it in the \
             [config] table of the driver's grant policy (policy.toml)"
        ))),
        None => Err(Error::Failure(format!(
            "the driver's configuration has no {key:?}: the operator sets it in the [config] \
             table of the driver's grant policy (policy.toml)"
        ))),
    }
}

fn wrong_type(key: &str, entry: &Entry, wanted: &str) -> Error {
    // Never the value of a secret: only its kind.
    let found = match (&entry.value, entry.secret) {
        (Value::Text(_), true) => "text".to_owned(),
        (Value::Integer(_), true) => "a number".to_owned(),
        (Value::Text(t), false) => format!("{t:?}"),
        (Value::Integer(i), false) => i.to_string(),
        (Value::Boolean(b), _) => b.to_string(),
        (Value::List(_), _) => "a list".to_owned(),
    };
    Error::Failure(format!(
        "the driver's configuration value {key:?} must be {wanted}, not {found}: the operator \
         sets it in the [config] table of the driver's grant policy (policy.toml)"
    ))
}

fn text_of(key: &str, entry: Entry) -> Result<String> {
    match entry.value {
        Value::Text(t) => Ok(t),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        Value::List(_) => Err(wrong_type(
            key,
            &entry,
            "text (use config::list for a list)",
        )),
    }
}

fn integer_of(key: &str, entry: Entry) -> Result<i64> {
    match &entry.value {
        Value::Integer(i) => Ok(*i),
        Value::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| wrong_type(key, &entry, "a whole number")),
        _ => Err(wrong_type(key, &entry, "a whole number")),
    }
}

fn boolean_of(key: &str, entry: Entry) -> Result<bool> {
    match &entry.value {
        Value::Boolean(b) => Ok(*b),
        Value::Text(t) if t.trim() == "true" => Ok(true),
        Value::Text(t) if t.trim() == "false" => Ok(false),
        _ => Err(wrong_type(key, &entry, "true or false")),
    }
}

fn list_of(key: &str, entry: Entry) -> Result<Vec<String>> {
    match entry.value {
        Value::List(l) => Ok(l),
        Value::Text(t) => Ok(t
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        _ => Err(wrong_type(key, &entry, "a list of strings")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(value: Value) -> Entry {
        Entry {
            value,
            secret: false,
        }
    }

    fn message(e: Error) -> String {
        match e {
            Error::Failure(m) => m,
            Error::NotSupported => panic!("not a failure"),
        }
    }

    #[test]
    fn text_numbers_and_booleans_convert_as_written() {
        assert_eq!(text_of("k", plain(Value::Integer(8443))).unwrap(), "8443");
        assert_eq!(text_of("k", plain(Value::Boolean(true))).unwrap(), "true");
        assert_eq!(
            integer_of("k", plain(Value::Text(" 42 ".into()))).unwrap(),
            42
        );
        assert!(boolean_of("k", plain(Value::Text("false".into()))).is_ok_and(|b| !b));
        assert_eq!(
            list_of("k", plain(Value::Text("a, b,,c ".into()))).unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(
            list_of("k", plain(Value::List(vec!["x,y".into()]))).unwrap(),
            ["x,y"]
        );
    }

    #[test]
    fn wrong_types_name_the_key_and_the_policy() {
        let m = message(integer_of("port", plain(Value::Text("https".into()))).unwrap_err());
        assert!(
            m.contains("\"port\" must be a whole number, not \"https\""),
            "{m}"
        );
        assert!(m.contains("policy.toml"), "{m}");
        let m = message(text_of("pools", plain(Value::List(vec![]))).unwrap_err());
        assert!(m.contains("config::list"), "{m}");
        let m = message(boolean_of("thin", plain(Value::Integer(1))).unwrap_err());
        assert!(m.contains("true or false, not 1"), "{m}");
    }

    #[test]
    fn secrets_never_show_their_value() {
        let entry = Entry {
            value: Value::Text("hunter2-token".into()),
            secret: true,
        };
        assert!(!format!("{entry:?}").contains("hunter2"));
        let m = message(integer_of("token", entry).unwrap_err());
        assert!(!m.contains("hunter2") && m.contains("not text"), "{m}");
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s} {s:?}"), "<secret> Secret(<secret>)");
        assert_eq!(s.expose(), "hunter2-token");
        assert!(required("token", Some("  ".into())).is_err());
    }
}
