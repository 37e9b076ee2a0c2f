//! Which WIT interfaces a plugin may import: what each one lets it do, and
//! whether a grant allows it.

use super::Grant;

/// A WIT interface a plugin may import, and whether a grant allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Always linked (types, log, WASI stdio/clocks/random).
    Baseline,
    State,
    Loop,
    Devices,
    Config,
    Http,
    /// Never linked (filesystem, sockets, unknown).
    Never,
}

impl Capability {
    /// Classify an import by name (`ns:pkg/iface@version`).
    pub fn of_import(name: &str) -> Capability {
        let bare = name.split('@').next().unwrap_or(name);
        match bare {
            "flexwasm:driver/types" | "flexwasm:driver/log" => Capability::Baseline,
            "flexwasm:driver/state" => Capability::State,
            "flexwasm:driver/loop" => Capability::Loop,
            "flexwasm:driver/devices" => Capability::Devices,
            "flexwasm:driver/config" => Capability::Config,
            "wasi:http/outgoing-handler" | "wasi:http/types" => Capability::Http,
            b if b.starts_with("wasi:io/")
                || b.starts_with("wasi:clocks/")
                || b.starts_with("wasi:random/")
                || b.starts_with("wasi:cli/") =>
            {
                Capability::Baseline
            }
            _ => Capability::Never,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Capability::Baseline => "baseline",
            Capability::State => "state",
            Capability::Loop => "loop",
            Capability::Devices => "devices",
            Capability::Config => "config",
            Capability::Http => "http",
            Capability::Never => "never granted",
        }
    }
}

/// What an import lets a plugin do, in plain words.
pub fn describe_import(name: &str) -> &'static str {
    let bare = name.split('@').next().unwrap_or(name);
    match bare {
        "flexwasm:driver/types" => "shared type definitions (no functions)",
        "flexwasm:driver/log" => "may write log lines to the driver's call log",
        "flexwasm:driver/state" => {
            "may keep durable key/value state (quota-bound) in the driver's state dir"
        }
        "flexwasm:driver/loop" => {
            "may create, grow, attach and detach loop devices backed by image files in one directory"
        }
        "flexwasm:driver/devices" => {
            "may list this node's block devices (read-only: paths, sizes, serials, WWNs, loop backing files)"
        }
        b if b.starts_with("wasi:cli/std") => {
            "standard streams: stdin closed, stdout/stderr captured to the call log"
        }
        "wasi:cli/environment" => "environment variables and arguments: always empty",
        "wasi:cli/exit" => "may end its own instance",
        b if b.starts_with("wasi:cli/terminal") => "terminal queries: always 'not a terminal'",
        b if b.starts_with("wasi:io/") => "stream and poll plumbing for its own stdio",
        b if b.starts_with("wasi:clocks/") => "may read the clock",
        b if b.starts_with("wasi:random/") => "may draw random numbers",
        b if b.starts_with("wasi:filesystem/") => {
            "host files: never granted, no host file is visible to plugins"
        }
        b if b.starts_with("wasi:sockets/") => "network sockets: never granted",
        "flexwasm:driver/config" => "may read the values the operator configured for this driver",
        "wasi:http/outgoing-handler" => "may send HTTP requests to the hosts the grant allows",
        "wasi:http/types" => "HTTP request and response types (for outbound HTTP)",
        _ => "unknown interface: never granted",
    }
}

impl Grant {
    pub fn allows(&self, cap: Capability) -> bool {
        match cap {
            Capability::Baseline => true,
            Capability::State => self.state_quota.is_some(),
            Capability::Loop => self.loop_image_dir.is_some(),
            Capability::Devices => self.devices,
            Capability::Config => self.config.is_some(),
            Capability::Http => self.http.is_some(),
            Capability::Never => false,
        }
    }

    /// The imports this grant does not allow.
    pub fn ungranted<'a>(&self, imports: &'a [String]) -> Vec<&'a str> {
        imports
            .iter()
            .filter(|i| !self.allows(Capability::of_import(i)))
            .map(String::as_str)
            .collect()
    }
}
