use super::*;
use std::process::Command;

fn driver(name: &str) -> DriverName {
    DriverName::parse(name).unwrap()
}

/// The checkout these tests were built from.
fn workspace_root() -> PathBuf {
    fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap()
}

#[test]
fn crate_names_are_cargo_package_names() {
    assert_eq!(crate_name(&driver("acme/scratch")), "acme-scratch");
    assert_eq!(
        crate_name(&driver("Example.com/Fast_Disk")),
        "example-com-fast_disk"
    );
    assert_eq!(crate_name(&driver("3par/x")), "plugin-3par-x");
    assert_eq!(crate_name(&driver("_v/x")), "plugin-_v-x");
}

#[test]
fn every_placeholder_of_every_template_is_filled() {
    let values = [
        ("crate_name", "c"),
        ("driver_name", "v/d"),
        ("vendor", "v"),
        ("driver", "d"),
        ("wasm_file", "c.wasm"),
        ("sdk_dependency", "flexwasm-sdk = { path = \"/s\" }"),
    ];
    for template in [CARGO_TOML, LIB_RS, POLICY_TOML, README_MD, GITIGNORE] {
        let rendered = render(template, &values);
        let left = rendered
            .match_indices("{{")
            .filter(|(i, _)| {
                let rest = &rendered[i + 2..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                !name.is_empty() && rest[name.len()..].starts_with("}}")
            })
            .count();
        assert_eq!(left, 0, "unfilled placeholder in:\n{rendered}");
    }
}

#[test]
fn the_sdk_path_is_relative_inside_the_checkout_and_absolute_outside() {
    let root = Path::new("/src/flexwasm");
    assert_eq!(
        sdk_path(Path::new("/src/flexwasm/plugins/acme"), root).unwrap(),
        "../../sdk"
    );
    assert_eq!(
        sdk_path(Path::new("/home/me/acme"), root).unwrap(),
        "/src/flexwasm/sdk"
    );
    assert_eq!(toml_string(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
}

#[test]
fn a_directory_with_anything_in_it_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
    let error =
        scaffold_from(&driver("acme/x"), Some(tmp.path()), None, tmp.path(), None).unwrap_err();
    assert!(matches!(error, ScaffoldError::NotEmpty(_)), "{error}");
    assert_eq!(
        fs::read_to_string(tmp.path().join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn an_sdk_that_is_not_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let error = scaffold_from(
        &driver("acme/x"),
        Some(&tmp.path().join("x")),
        Some(tmp.path()),
        tmp.path(),
        None,
    )
    .unwrap_err();
    assert!(matches!(error, ScaffoldError::NotAnSdk(_)), "{error}");
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn without_a_checkout_cargo_toml_names_the_documented_placeholder() {
    let tmp = tempfile::tempdir().unwrap();
    let made = scaffold_from(&driver("acme/x"), None, None, tmp.path(), None).unwrap();
    assert_eq!(made.sdk, SdkSource::Placeholder);
    assert!(!made.lock_copied);
    let manifest = fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("flexwasm-sdk = { path = \"../flexwasm/sdk\" }"),
        "{manifest}"
    );
    assert!(
        made.summary()
            .contains("WARNING: no flexwasm checkout found")
    );
}

#[test]
fn the_checkout_is_found_around_the_crate_or_the_current_dir() {
    let root = workspace_root();
    let tmp = tempfile::tempdir().unwrap();
    // Outside the checkout, run from inside it: an absolute path.
    let made = scaffold_from(
        &driver("acme/x"),
        Some(&tmp.path().join("x")),
        None,
        &root.join("host"),
        None,
    )
    .unwrap();
    let SdkSource::Checkout { path, .. } = &made.sdk else {
        panic!("{:?}", made.sdk)
    };
    assert_eq!(Path::new(path), root.join("sdk"));
    // Run from elsewhere, the checkout the binary was built from.
    let made = scaffold_from(&driver("acme/y"), None, None, tmp.path(), Some(&root)).unwrap();
    assert!(matches!(made.sdk, SdkSource::Checkout { found, .. } if found.contains("built from")));
    assert!(made.lock_copied);
    assert_eq!(
        fs::read(made.dir.join("Cargo.lock")).unwrap(),
        fs::read(root.join("Cargo.lock")).unwrap()
    );
}

/// The target dir this test binary was built in (CARGO_TARGET_DIR or
/// target/): `<target>/release/deps/flexwasm-…`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

fn cargo(dir: &Path, args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(dir)
        // Its own target dir, kept between runs: the outer cargo holds the
        // lock on this one's, and the dependencies are built only once.
        .env("CARGO_TARGET_DIR", target_dir().join("scaffold"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `flexwasm new` makes a crate that builds as a component, whose native
/// tests pass, and whose policy grants exactly what it imports.
#[test]
fn a_scaffolded_plugin_builds_passes_its_tests_and_fits_its_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let made = scaffold_from(
        &driver("acme/scratch"),
        Some(&tmp.path().join("scratch")),
        Some(&workspace_root()),
        tmp.path(),
        None,
    )
    .unwrap();
    cargo(
        &made.dir,
        &["build", "--release", "--target", "wasm32-wasip2"],
    );
    cargo(&made.dir, &["test", "--release"]);

    let target = target_dir().join("scaffold");
    let wasm = target.join(made.wasm.strip_prefix("target").unwrap());
    let report = crate::inspect::inspect(&wasm, Some(&made.dir.join("policy.toml"))).unwrap();
    assert!(
        report.ok,
        "the scaffold's policy does not grant what it imports:\n{}",
        crate::inspect::render_text(&report)
    );
    let text = crate::inspect::render_text(&report);
    assert!(text.contains("flexwasm:driver/state"), "{text}");
    assert!(text.contains("flexwasm:driver/log"), "{text}");
}
