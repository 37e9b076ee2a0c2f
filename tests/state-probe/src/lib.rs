//! Test plugin for the host's durable state store and operator config.
//!
//! `init` reports node-only capabilities. `getvolumename <json>` runs the
//! option `op` on the option `key` and answers with what it found:
//!
//! | `op` | what it does | answer |
//! |---|---|---|
//! | `increment` | adds 1 to the decimal counter at `key` with [`state::update`] (compare-and-swap, retried) | the value it stored |
//! | `churn` | `writes` times: reads the record at `key` and stores the next one, `kib` KiB long | the last sequence number stored |
//! | `check` | reads the record at `key` and checks it whole | `seq N`, or `absent` |
//! | `config` | reads the config entry `key` | its `Debug` form (a secret's value shows as `<secret>`), or `absent` |
//! | `config-integer` | reads the config entry `key` as a whole number | the number, or `absent` |
//!
//! A record is the sequence number (8 bytes, little endian), its length (8
//! bytes), then that many bytes each equal to the sequence number mod 251.
//! A torn write — part old, part new, or cut short — cannot pass `check`.

use flexwasm_sdk::prelude::*;
use flexwasm_sdk::state;

#[derive(Default)]
struct StateProbe;

impl Driver for StateProbe {
    fn init(&self) -> Result<Capabilities> {
        Ok(Capabilities::node_only())
    }

    fn get_volume_name(&self, options: &Options) -> Result<String> {
        let key = required(options, "key")?;
        match required(options, "op")? {
            "increment" => increment(key),
            "churn" => churn(
                key,
                number(options, "writes")?,
                number(options, "kib")? * 1024,
            ),
            "check" => Ok(match read_record(key)? {
                Some(seq) => format!("seq {seq}"),
                None => "absent".to_string(),
            }),
            "config" => Ok(match flexwasm_sdk::config::entry(key)? {
                Some(entry) => format!("{entry:?}"),
                None => "absent".to_string(),
            }),
            "config-integer" => Ok(match flexwasm_sdk::config::integer(key)? {
                Some(n) => n.to_string(),
                None => "absent".to_string(),
            }),
            other => fail!("unknown op {other:?}"),
        }
    }
}

export_driver!(StateProbe);

fn required<'a>(options: &'a Options, name: &str) -> Result<&'a str> {
    match options.get(name) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => fail!("option {name:?} is required"),
    }
}

fn number(options: &Options, name: &str) -> Result<u64> {
    let text = required(options, name)?;
    text.parse().map_err(|_| {
        Error::failure(format!(
            "option {name:?} must be a whole number, not {text:?}"
        ))
    })
}

fn increment(key: &str) -> Result<String> {
    let stored = state::update(key, |old| {
        let count: u64 = match old {
            None => 0,
            Some(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| Error::failure(format!("counter {key:?} is not a number")))?,
        };
        Ok(Some((count + 1).to_string().into_bytes()))
    })?;
    Ok(String::from_utf8(stored.unwrap_or_default()).unwrap_or_default())
}

fn churn(key: &str, writes: u64, len: u64) -> Result<String> {
    let mut seq = read_record(key)?.unwrap_or(0);
    let len = usize::try_from(len).map_err(|_| Error::failure("kib is too large"))?;
    for _ in 0..writes {
        seq += 1;
        let mut record = Vec::with_capacity(16 + len);
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(&(len as u64).to_le_bytes());
        record.resize(16 + len, (seq % 251) as u8);
        state::set(key, &record)?;
    }
    Ok(seq.to_string())
}

/// The sequence number of the whole record at `key`; a failure naming what
/// is wrong if it is torn.
fn read_record(key: &str) -> Result<Option<u64>> {
    let Some(record) = state::get(key)? else {
        return Ok(None);
    };
    if record.len() < 16 {
        fail!(
            "torn record: {} bytes, shorter than its header",
            record.len()
        );
    }
    let seq = u64::from_le_bytes(record[..8].try_into().unwrap_or_default());
    let len = u64::from_le_bytes(record[8..16].try_into().unwrap_or_default());
    let body = &record[16..];
    if body.len() as u64 != len {
        fail!(
            "torn record {seq}: header says {len} bytes, body has {}",
            body.len()
        );
    }
    let fill = (seq % 251) as u8;
    if let Some(at) = body.iter().position(|&b| b != fill) {
        fail!(
            "torn record {seq}: byte {at} is {} where {fill} was written",
            body[at]
        );
    }
    Ok(Some(seq))
}
