//! The storage array's REST API, as this driver uses it.
//!
//! JSON over HTTP(S); every `/api/v1` route needs `Authorization: Bearer
//! <token>`. Errors come back as `{"error": "..."}` with a 4xx/5xx status.
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/v1/volumes {"name","size_bytes"}` | 201 new, 200 same name and size, 409 other size |
//! | `GET /api/v1/volumes?name=N` | `{"volumes": [...]}` (a bare list is accepted too) |
//! | `GET /api/v1/volumes/{id}` | the volume, 404 if none |
//! | `POST /api/v1/volumes/{id}/resize {"size_bytes"}` | the volume |
//! | `POST /api/v1/volumes/{id}/attach {"node"}` | the volume, with `device` and `backing_file` |
//! | `POST /api/v1/volumes/{id}/detach {"node"}` | the volume; idempotent |

use std::time::Duration;

use flexwasm_sdk::config::Secret;
use flexwasm_sdk::http::{Request, Response};
use flexwasm_sdk::serde_json::json;
use flexwasm_sdk::{Error, Result, config, fail, log};
use serde::Deserialize;

/// Bounds connecting and each wait for the array, well inside the call's
/// deadline, so a dead array gives a clear message rather than a killed call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest volume id accepted from the array or the state store.
const MAX_ID_BYTES: usize = 128;

/// A volume as the array describes it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Volume {
    /// Chosen by the array, e.g. `vol-0a1b2c3d`.
    pub id: String,
    /// Chosen by this driver: the PV name.
    pub name: String,
    pub size_bytes: u64,
    /// The node it is attached to.
    #[serde(default)]
    pub attached_to: Option<String>,
    /// Its device on that node, e.g. `/dev/loop3`, while attached.
    #[serde(default)]
    pub device: Option<String>,
    /// The file behind the loop device the array attaches; how the node
    /// finds the device.
    #[serde(default)]
    pub backing_file: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
}

/// The answer to a search by name.
#[derive(Deserialize)]
#[serde(untagged)]
enum VolumeList {
    Wrapped { volumes: Vec<Volume> },
    Bare(Vec<Volume>),
}

impl VolumeList {
    fn into_vec(self) -> Vec<Volume> {
        match self {
            VolumeList::Wrapped { volumes } | VolumeList::Bare(volumes) => volumes,
        }
    }
}

/// A connection to the array: where it is and the API token. `Debug` is
/// not derived, so the token cannot end up in a log line.
pub struct Array {
    endpoint: String,
    token: Secret,
}

impl Array {
    /// The array the operator configured (`endpoint` and `token` in the
    /// policy's `[config]`). kubelet passes a volume's secret only to
    /// `mount`, which this driver leaves to the host; attach, detach and
    /// isattached run in the controller-manager with no secret at all, so
    /// the token is the operator's.
    pub fn connect() -> Result<Array> {
        let endpoint = config::require("endpoint")?
            .trim()
            .trim_end_matches('/')
            .to_owned();
        let token = configured_token(&endpoint, config::secret("token")?)?;
        Ok(Array { endpoint, token })
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The volume named `name`, if the array has one.
    pub fn find_by_name(&self, name: &str) -> Result<Option<Volume>> {
        let action = format!("looking up volume {name}");
        let request = Request::get(self.url("/api/v1/volumes")).query("name", name);
        let response = self.send(request, &action)?;
        let list: VolumeList = self.expect_json(&response, &action, &[200])?;
        // Do not rely on the array to have filtered.
        Ok(list
            .into_vec()
            .into_iter()
            .find(|volume| volume.name == name))
    }

    /// The volume with id `id`, `None` if the array has none.
    pub fn get(&self, id: &str) -> Result<Option<Volume>> {
        let action = format!("reading volume {id}");
        let url = self.volume_url(id, "")?;
        let response = self.send(Request::get(url), &action)?;
        if response.status == 404 {
            return Ok(None);
        }
        self.expect_json(&response, &action, &[200]).map(Some)
    }

    /// Creates volume `name` of `size_bytes`, or returns the existing one of
    /// that name, whatever its size (it may have been expanded since).
    pub fn create(&self, name: &str, size_bytes: u64) -> Result<Volume> {
        let action = format!("creating volume {name}");
        let request = Request::post(self.url("/api/v1/volumes"))
            .json(json!({ "name": name, "size_bytes": size_bytes }));
        let response = self.send(request, &action)?;
        // Same name, other size: it may have been expanded since.
        if response.status == 409
            && let Some(existing) = self.find_by_name(name)?
        {
            log::info(format!(
                "volume {name} already exists on the array as {} ({} bytes, {size_bytes} \
                 asked for); using it",
                existing.id, existing.size_bytes
            ));
            return Ok(existing);
        }
        self.expect_json(&response, &action, &[200, 201])
    }

    /// Attaches volume `id` to `node`.
    pub fn attach(&self, id: &str, node: &str) -> Result<Volume> {
        let action = format!("attaching volume {id} to node {node}");
        let url = self.volume_url(id, "/attach")?;
        let response = self.send(Request::post(url).json(json!({ "node": node })), &action)?;
        self.expect_json(&response, &action, &[200, 201])
    }

    /// Detaches volume `id` from `node`; `false` if the array has no such
    /// volume. Detaching a volume that is not attached to `node` (detached,
    /// or attached elsewhere) is fine.
    pub fn detach(&self, id: &str, node: &str) -> Result<bool> {
        let action = format!("detaching volume {id} from node {node}");
        let url = self.volume_url(id, "/detach")?;
        let response = self.send(Request::post(url).json(json!({ "node": node })), &action)?;
        match response.status {
            404 => Ok(false),
            200..=299 => Ok(true),
            // Attached to another node: then it is not attached to `node`,
            // which is what kubelet's detach asks for.
            409 => match self.get(id)? {
                Some(volume) if volume.attached_to.as_deref() != Some(node) => {
                    log::warn(format!(
                        "volume {id} is not attached to node {node} (attached to: {}); nothing \
                         to detach there",
                        volume.attached_to.as_deref().unwrap_or("none")
                    ));
                    Ok(true)
                }
                _ => Err(self.api_failure(&action, &response)),
            },
            _ => Err(self.api_failure(&action, &response)),
        }
    }

    /// Grows volume `id` to `size_bytes`.
    pub fn resize(&self, id: &str, size_bytes: u64) -> Result<Volume> {
        let action = format!("resizing volume {id} to {size_bytes} bytes");
        let url = self.volume_url(id, "/resize")?;
        let request = Request::post(url).json(json!({ "size_bytes": size_bytes }));
        let response = self.send(request, &action)?;
        self.expect_json(&response, &action, &[200])
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    fn volume_url(&self, id: &str, suffix: &str) -> Result<String> {
        check_id(id).map_err(|problem| self.failure(&format!("using volume {id:?}"), &problem))?;
        Ok(self.url(&format!("/api/v1/volumes/{id}{suffix}")))
    }

    /// Sends with the token and timeout; any status is `Ok`.
    fn send(&self, request: Request, action: &str) -> Result<Response> {
        request
            .bearer(self.token.expose())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .map_err(|error| self.failure(action, &error.to_string()))
    }

    fn expect_json<T: serde::de::DeserializeOwned>(
        &self,
        response: &Response,
        action: &str,
        expected: &[u16],
    ) -> Result<T> {
        if !expected.contains(&response.status) {
            return Err(self.api_failure(action, response));
        }
        response
            .json()
            .map_err(|error| self.failure(action, &error.to_string()))
    }

    /// `array at <endpoint>: <action> failed: 401 invalid or missing API token`.
    fn api_failure(&self, action: &str, response: &Response) -> Error {
        let excerpt = response.excerpt();
        let problem = if excerpt.is_empty() {
            format!("status {}", response.status)
        } else {
            format!("{} {excerpt}", response.status)
        };
        self.failure(action, &problem)
    }

    fn failure(&self, action: &str, problem: &str) -> Error {
        Error::Failure(format!(
            "array at {}: {action} failed: {problem}",
            self.endpoint
        ))
    }
}

/// The operator's token, without surrounding whitespace (a trailing
/// newline from a file).
fn configured_token(endpoint: &str, configured: Option<Secret>) -> Result<Secret> {
    match configured {
        Some(token) if !token.expose().trim().is_empty() => Ok(Secret::new(token.expose().trim())),
        _ => fail!(
            "array at {endpoint}: no API token: the operator sets \"token\" in the [config] \
             table of the driver's grant policy"
        ),
    }
}

/// Ids go into URL paths: only `[A-Za-z0-9._-]`, not `.` or `..`.
fn check_id(id: &str) -> std::result::Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a volume id (at most {MAX_ID_BYTES} letters, digits, '.', '_', '-')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexwasm_sdk::serde_json;

    const VOLUME: &str = r#"{"id":"vol-0a1b2c3d","name":"pv-1","size_bytes":1073741824,
        "attached_to":"node-a","device":"/dev/loop3",
        "backing_file":"/var/lib/array/vol-0a1b2c3d.img","serial":"ARR0A1B2C3D"}"#;

    #[test]
    fn volumes_parse_with_and_without_attachment() {
        let volume: Volume = serde_json::from_str(VOLUME).unwrap();
        assert_eq!(volume.id, "vol-0a1b2c3d");
        assert_eq!(volume.attached_to.as_deref(), Some("node-a"));
        assert_eq!(
            volume.backing_file.as_deref(),
            Some("/var/lib/array/vol-0a1b2c3d.img")
        );
        let detached: Volume = serde_json::from_str(
            r#"{"id":"vol-1","name":"pv-2","size_bytes":1,"attached_to":null,"device":null,
                "backing_file":"/f","serial":"S","extra":"ignored"}"#,
        )
        .unwrap();
        assert_eq!(detached.attached_to, None);
        assert_eq!(detached.device, None);
    }

    #[test]
    fn volume_lists_come_wrapped_or_bare() {
        let wrapped: VolumeList =
            serde_json::from_str(&format!(r#"{{"volumes":[{VOLUME}]}}"#)).unwrap();
        assert_eq!(wrapped.into_vec().len(), 1);
        let bare: VolumeList = serde_json::from_str(&format!("[{VOLUME}]")).unwrap();
        assert_eq!(bare.into_vec()[0].name, "pv-1");
        let empty: VolumeList = serde_json::from_str(r#"{"volumes":[]}"#).unwrap();
        assert!(empty.into_vec().is_empty());
    }

    #[test]
    fn ids_are_safe_path_segments() {
        assert!(check_id("vol-0a1b2c3d").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "vol/../../x",
            "vol 1",
            "vol?x",
            &"a".repeat(129),
        ] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_operators_token_is_trimmed() {
        assert_eq!(
            configured_token("http://a:1", Some(Secret::new(" from-config\n"))),
            Ok(Secret::new("from-config"))
        );
    }

    #[test]
    fn a_missing_token_fails_without_showing_anything() {
        for configured in [None, Some(Secret::new("  "))] {
            let missing = configured_token("http://a:1", configured)
                .unwrap_err()
                .to_string();
            assert!(
                missing
                    .starts_with("array at http://a:1: no API token: the operator sets \"token\""),
                "{missing}"
            );
        }
    }
}
