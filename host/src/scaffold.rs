//! `flexwasm new VENDOR/NAME`: start a plugin crate.
//!
//! Writes a crate that builds as it is: `Cargo.toml` (a `cdylib` on
//! `flexwasm-sdk` and serde), `src/lib.rs` (a small node-only driver that
//! mounts a tmpfs, logs, and records each mount for its unmount with
//! `flexwasm_sdk::mounts`, with native tests on the SDK's in-memory host),
//! `policy.toml` (the grant it needs and nothing more), `README.md` and
//! `.gitignore`. The templates are `host/templates/plugin/*`.
//!
//! Where the SDK comes from, first found wins:
//!
//! 1. `--sdk DIR`: a flexwasm checkout, or its `sdk/` directory.
//! 2. The flexwasm checkout the new crate's directory is inside, or the
//!    current directory is inside.
//! 3. The checkout this binary was built from, if it is still there.
//!
//! The dependency is a path: relative when the crate sits inside that
//! checkout (so both can move together), absolute otherwise. Its
//! `Cargo.lock` is copied too, so the first build resolves every crate to
//! the version flexwasm builds and tests (the SDK pins the crates its
//! generated code depends on exactly, so a fresh resolution is safe too).
//! With no checkout found, `Cargo.toml` names `../flexwasm/sdk` — a clone
//! of the flexwasm repository beside the crate — and the summary says to
//! fix that path before building.
//!
//! Nothing is overwritten: the directory must not exist, or be empty.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::layout::DriverName;

const CARGO_TOML: &str = include_str!("../templates/plugin/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("../templates/plugin/lib.rs.tmpl");
const POLICY_TOML: &str = include_str!("../templates/plugin/policy.toml.tmpl");
const README_MD: &str = include_str!("../templates/plugin/README.md.tmpl");
const GITIGNORE: &str = include_str!("../templates/plugin/gitignore.tmpl");

/// Where the dependency points when no checkout is found.
const PLACEHOLDER_SDK: &str = "../flexwasm/sdk";

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0} exists and is not empty; choose another --dir")]
    NotEmpty(PathBuf),
    #[error(
        "{0} is not a flexwasm checkout nor its sdk/ directory (no sdk/Cargo.toml for flexwasm-sdk)"
    )]
    NotAnSdk(PathBuf),
    #[error("{0} is not valid UTF-8; Cargo.toml cannot name it")]
    NotUtf8(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the new crate's `flexwasm-sdk` dependency points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A checkout's `sdk/`; `path` as written in Cargo.toml.
    Checkout {
        root: PathBuf,
        path: String,
        /// How it was found, for the summary.
        found: &'static str,
    },
    /// No checkout found: `../flexwasm/sdk`, to be fixed by hand.
    Placeholder,
}

/// What [`scaffold`] made.
#[derive(Debug)]
pub struct Scaffolded {
    pub driver: DriverName,
    pub dir: PathBuf,
    pub crate_name: String,
    /// The component `cargo build --release --target wasm32-wasip2` makes,
    /// relative to `dir`.
    pub wasm: PathBuf,
    pub sdk: SdkSource,
    /// The checkout's Cargo.lock was copied.
    pub lock_copied: bool,
    pub files: Vec<PathBuf>,
}

impl Scaffolded {
    /// What `flexwasm new` prints.
    pub fn summary(&self) -> String {
        let dir = self.dir.display();
        let wasm = self.wasm.display();
        let mut out = format!(
            "created plugin crate {} for driver {} in {dir}\n",
            self.crate_name, self.driver
        );
        match &self.sdk {
            SdkSource::Checkout { path, found, .. } => {
                out.push_str(&format!("  flexwasm-sdk: path {path} ({found})\n"));
                if self.lock_copied {
                    out.push_str(
                        "  Cargo.lock: the checkout's, so the first build uses its versions\n",
                    );
                }
            }
            SdkSource::Placeholder => out.push_str(&format!(
                "  WARNING: no flexwasm checkout found, so Cargo.toml depends on \
                 {PLACEHOLDER_SDK}: clone the flexwasm repository there, or edit that path \
                 (or run flexwasm new again with --sdk <checkout>)\n"
            )),
        }
        out.push_str(&format!(
            "next:\n  cd {dir}\n  cargo test                                    # native tests\n  \
             cargo build --release --target wasm32-wasip2  # the plugin: {wasm}\n  \
             flexwasm inspect {wasm} --policy policy.toml\n"
        ));
        out
    }
}

/// The crate name for `driver`: `vendor-name`, lower-case, with anything
/// Cargo does not take in a package name made a `-`.
pub fn crate_name(driver: &DriverName) -> String {
    let raw = format!("{}-{}", driver.vendor, driver.driver).to_ascii_lowercase();
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name
    } else {
        // Cargo refuses a package name starting with a digit.
        format!("plugin-{name}")
    }
}

/// Creates the plugin crate for `driver` in `dir` (default: `./NAME`),
/// depending on the SDK at `sdk` or the one found as the module docs say.
pub fn scaffold(
    driver: &DriverName,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> Result<Scaffolded, ScaffoldError> {
    let cwd = std::env::current_dir().map_err(io_err(Path::new(".")))?;
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    scaffold_from(driver, dir, sdk, &cwd, Some(&built_from))
}

/// [`scaffold`] relative to `cwd`, falling back to the checkout at
/// `built_from`.
fn scaffold_from(
    driver: &DriverName,
    dir: Option<&Path>,
    sdk: Option<&Path>,
    cwd: &Path,
    built_from: Option<&Path>,
) -> Result<Scaffolded, ScaffoldError> {
    let dir = cwd.join(dir.unwrap_or(Path::new(&driver.driver)));
    let checkout = match sdk {
        Some(given) => {
            let given = cwd.join(given);
            let root = [given.clone(), given.join("..")]
                .into_iter()
                .find(|candidate| is_checkout(candidate))
                .ok_or(ScaffoldError::NotAnSdk(given))?;
            Some((canonical(&root)?, "given with --sdk"))
        }
        None => find_checkout(&dir, cwd, built_from)?,
    };

    create_empty_dir(&dir)?;
    let dir = canonical(&dir)?;
    let crate_name = crate_name(driver);
    let wasm_file = format!("{}.wasm", crate_name.replace('-', "_"));
    let (source, dependency) = match checkout {
        Some((root, found)) => {
            let path = sdk_path(&dir, &root)?;
            let dependency = format!("flexwasm-sdk = {{ path = {} }}", toml_string(&path));
            let source = SdkSource::Checkout { root, path, found };
            (source, dependency)
        }
        None => (
            SdkSource::Placeholder,
            format!(
                "# No flexwasm checkout was found when this crate was made: point this at\n\
                 # the sdk/ directory of a clone of the flexwasm repository.\n\
                 flexwasm-sdk = {{ path = \"{PLACEHOLDER_SDK}\" }}"
            ),
        ),
    };
    let values = [
        ("crate_name", crate_name.as_str()),
        ("driver_name", &driver.to_string()),
        ("vendor", &driver.vendor),
        ("driver", &driver.driver),
        ("wasm_file", &wasm_file),
        ("sdk_dependency", &dependency),
    ];
    let files = [
        ("Cargo.toml", CARGO_TOML),
        ("src/lib.rs", LIB_RS),
        ("policy.toml", POLICY_TOML),
        ("README.md", README_MD),
        (".gitignore", GITIGNORE),
    ];
    let mut written = Vec::new();
    fs::create_dir_all(dir.join("src")).map_err(io_err(&dir))?;
    for (name, template) in files {
        let path = dir.join(name);
        fs::write(&path, render(template, &values)).map_err(io_err(&path))?;
        written.push(path);
    }
    let mut lock_copied = false;
    if let SdkSource::Checkout { root, .. } = &source {
        let lock = root.join("Cargo.lock");
        if lock.is_file() {
            let to = dir.join("Cargo.lock");
            fs::copy(&lock, &to).map_err(io_err(&to))?;
            written.push(to);
            lock_copied = true;
        }
    }
    Ok(Scaffolded {
        driver: driver.clone(),
        dir,
        crate_name,
        wasm: Path::new("target/wasm32-wasip2/release").join(wasm_file),
        sdk: source,
        lock_copied,
        files: written,
    })
}

/// `template` with each `{{key}}` replaced by its value.
fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

/// A flexwasm checkout: the SDK crate and the WIT package it is built from.
fn is_checkout(dir: &Path) -> bool {
    let manifest = fs::read_to_string(dir.join("sdk/Cargo.toml")).unwrap_or_default();
    manifest.contains("name = \"flexwasm-sdk\"") && dir.join("wit/flexwasm.wit").is_file()
}

fn find_checkout(
    dir: &Path,
    cwd: &Path,
    built_from: Option<&Path>,
) -> Result<Option<(PathBuf, &'static str)>, ScaffoldError> {
    let around = |start: &Path| {
        start
            .ancestors()
            .find(|a| is_checkout(a))
            .map(Path::to_path_buf)
    };
    let found = around(dir)
        .map(|root| (root, "the flexwasm checkout the crate is in"))
        .or_else(|| {
            around(cwd).map(|root| (root, "the flexwasm checkout around the current directory"))
        })
        .or_else(|| {
            built_from.filter(|b| is_checkout(b)).map(|b| {
                (
                    b.to_path_buf(),
                    "the flexwasm checkout this flexwasm was built from",
                )
            })
        });
    found
        .map(|(root, how)| Ok((canonical(&root)?, how)))
        .transpose()
}

fn canonical(path: &Path) -> Result<PathBuf, ScaffoldError> {
    fs::canonicalize(path).map_err(io_err(path))
}

fn create_empty_dir(dir: &Path) -> Result<(), ScaffoldError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io_err(dir))
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// The checkout's `sdk/` as Cargo.toml in `dir` names it: relative when
/// `dir` is inside the checkout, absolute otherwise. Both are canonical.
fn sdk_path(dir: &Path, root: &Path) -> Result<String, ScaffoldError> {
    let sdk = root.join("sdk");
    let path = match dir.strip_prefix(root) {
        Ok(inside) => {
            let ups = inside
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count();
            let mut relative = PathBuf::new();
            for _ in 0..ups {
                relative.push("..");
            }
            relative.join("sdk")
        }
        Err(_) => sdk,
    };
    path.to_str()
        .map(str::to_owned)
        .ok_or(ScaffoldError::NotUtf8(path))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
