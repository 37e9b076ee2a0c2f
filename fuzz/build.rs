//! The argv target checks the decisions `driver_main` makes before and
//! after a call (which calls exit 0 on `Failure`; which secrets are
//! scrubbed from the answer). They live in the binary (host/src/main.rs),
//! which no other crate can call, so they are copied from it verbatim here
//! at build time: the target runs the code the binary runs. A rename there
//! stops this build, naming the function.

fn main() {
    let main_rs = "../host/src/main.rs";
    println!("cargo:rerun-if-changed={main_rs}");
    let text = std::fs::read_to_string(main_rs).expect("reading ../host/src/main.rs");
    let mut out = String::from("// Copied from host/src/main.rs by fuzz/build.rs.\n");
    for name in ["may_carry_secrets", "secrets_of"] {
        let start = text.find(&format!("\nfn {name}(")).unwrap_or_else(|| {
            panic!(
                "host/src/main.rs has no top-level `fn {name}(`: fuzz/build.rs copies it into \
                 the argv target; update fuzz/build.rs and fuzz_targets/argv.rs"
            )
        });
        let end = text[start..]
            .find("\n}\n")
            .map(|e| start + e + 3)
            .unwrap_or_else(|| panic!("the end of fn {name} in host/src/main.rs"));
        out.push_str(&text[start..end]);
    }
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("main_decisions.rs");
    std::fs::write(dest, out).unwrap();
}
