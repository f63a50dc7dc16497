//! `steward plugin new NAME [--lang rust] [--dir DIR] [--sdk PATH]`: a new
//! plugin project that builds to a component as generated and passes
//! `steward plugin check`, from the templates in `host/templates/`.
//!
//! Everything written is compiled into the binary (`include_str!`), never
//! read from the source tree it was built in, so an installed `steward`
//! works anywhere and what it writes cannot drift from the SDK and contract
//! it was built with. A Rust project gets a copy of the SDK in
//! `steward-sdk/`, depended on by a relative path, unless `--sdk` names one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

/// Arguments of `steward plugin new`.
#[derive(clap::Args)]
pub struct Args {
    /// The type's name: lowercase kebab-case, e.g. `my-service`.
    #[arg(value_parser = type_name)]
    name: String,
    /// The plugin's language.
    #[arg(long, value_enum, default_value_t = Language::Rust)]
    lang: Language,
    /// Where to create the project (default: ./NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `steward-sdk` crate to depend on (default: a copy of the SDK this
    /// binary was built from, written into the project's `steward-sdk/`).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

/// The languages `plugin new` writes projects for.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Language {
    Rust,
    Python,
    Js,
}

/// The Rust template's files: (file name, template).
const RUST_TEMPLATE: [(&str, &str); 4] = [
    ("Cargo.toml", include_str!("../../templates/rust/Cargo.toml.in")),
    ("src/lib.rs", include_str!("../../templates/rust/lib.rs.in")),
    ("README.md", include_str!("../../templates/rust/README.md.in")),
    (".gitignore", include_str!("../../templates/rust/gitignore.in")),
];

/// Where a Rust project keeps its copy of the SDK, relative to the project.
const EMBEDDED_SDK_DIR: &str = "steward-sdk";

/// What the README says of the embedded SDK.
const EMBEDDED_SDK_NOTE: &str = "\
`steward-sdk/` is a copy of the Steward SDK, with the contract it implements
(`steward-sdk/wit/`), from the `steward` that created this project.
`Cargo.toml` depends on it by path, so the project builds wherever it is.
To move to a newer SDK, replace the directory with the one a newer
`steward plugin new` writes.";

/// The SDK this binary was built from, contract included: (path under
/// [`EMBEDDED_SDK_DIR`], contents), written verbatim. Its manifest stands
/// alone (no `workspace = true`), so it builds outside Steward's workspace;
/// `sdk/wit` is the workspace's `wit/`. tests/all/plugin_new.rs fails when a
/// file of `sdk/` is missing here.
const EMBEDDED_SDK: [(&str, &str); 10] = [
    ("Cargo.toml", include_str!("../../../sdk/Cargo.toml")),
    ("README.md", include_str!("../../../sdk/README.md")),
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/host.rs", include_str!("../../../sdk/src/host.rs")),
    ("src/metadata.rs", include_str!("../../../sdk/src/metadata.rs")),
    ("src/process.rs", include_str!("../../../sdk/src/process.rs")),
    ("src/properties.rs", include_str!("../../../sdk/src/properties.rs")),
    ("wit/resource.wit", include_str!("../../../sdk/wit/resource.wit")),
    ("wit/types.wit", include_str!("../../../sdk/wit/types.wit")),
    ("wit/host.wit", include_str!("../../../sdk/wit/host.wit")),
];

/// The Python project is the `python-marker` example itself, renamed, with
/// the contract copied in (componentize-py builds from `wit/`).
const PYTHON_TEMPLATE: [(&str, &str); 5] = [
    ("README.md", include_str!("../../../plugins/examples/python-marker/README.md")),
    ("src/{{file}}.py", include_str!("../../../plugins/examples/python-marker/src/python_marker.py")),
    ("src/resource_type.py", include_str!("../../../plugins/examples/python-marker/src/resource_type.py")),
    ("build.sh", include_str!("../../../plugins/examples/python-marker/build.sh")),
    (".gitignore", include_str!("../../../plugins/examples/python-marker/.gitignore")),
];

/// The JavaScript project is the `js-marker` example itself, renamed, with
/// the contract copied in.
const JS_TEMPLATE: [(&str, &str); 7] = [
    ("README.md", include_str!("../../../plugins/examples/js-marker/README.md")),
    ("src/{{file}}.js", include_str!("../../../plugins/examples/js-marker/src/js_marker.js")),
    ("wit/{{name}}.wit", include_str!("../../../plugins/examples/js-marker/wit/js-marker.wit")),
    ("build.sh", include_str!("../../../plugins/examples/js-marker/build.sh")),
    ("package.json", include_str!("../../../plugins/examples/js-marker/package.json")),
    ("package-lock.json", include_str!("../../../plugins/examples/js-marker/package-lock.json")),
    (".gitignore", include_str!("../../../plugins/examples/js-marker/.gitignore")),
];

/// The contract, copied into projects whose toolchain reads WIT directly.
const WIT_FILES: [(&str, &str); 3] = [
    ("wit/resource.wit", include_str!("../../../wit/resource.wit")),
    ("wit/types.wit", include_str!("../../../wit/types.wit")),
    ("wit/host.wit", include_str!("../../../wit/host.wit")),
];

/// Writes the project.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        bail!("{} already exists; choose another name or --dir", dir.display());
    }
    let (sdk_dependency, sdk_note) = match &args.sdk {
        Some(sdk) => {
            let sdk = explicit_sdk(sdk)?.display().to_string();
            let note = format!("`Cargo.toml` depends on the Steward SDK at `{sdk}`.");
            (sdk, note)
        }
        None => (EMBEDDED_SDK_DIR.to_string(), EMBEDDED_SDK_NOTE.to_string()),
    };
    let camel: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    let replacements = [
        ("{{name}}", name.clone()),
        ("{{camel}}", camel),
        ("{{file}}", name.replace('-', "_")),
        ("{{sdk}}", sdk_dependency),
        ("{{sdk_note}}", sdk_note),
    ];
    let files: Vec<(&str, &str)> = match args.lang {
        Language::Rust => RUST_TEMPLATE.to_vec(),
        Language::Python => PYTHON_TEMPLATE.iter().chain(WIT_FILES.iter()).copied().collect(),
        Language::Js => JS_TEMPLATE.iter().chain(WIT_FILES.iter()).copied().collect(),
    };
    for (file, template) in files {
        let text = match args.lang {
            Language::Rust => template.to_string(),
            // The example's own names become the new type's.
            Language::Python => template
                .replace("python-marker", "{{name}}")
                .replace("python_marker", "{{file}}")
                .replace("$here/../../../wit", "$here/wit")
                .replace("the repository's `wit/`", "the copy of Steward's contract in `wit/`"),
            // The contract goes to `steward-wit/`: `wit/` holds the JS world.
            Language::Js => template
                .replace("js-marker", "{{name}}")
                .replace("js_marker", "{{file}}")
                .replace("\"$here\"/../../../wit/*.wit", "\"$here\"/steward-wit/*.wit")
                .replace("the repository's `wit/`", "the copy of Steward's contract in `steward-wit/`"),
        };
        let text = replacements.iter().fold(text, |text, (key, value)| text.replace(key, value));
        let file = file.replace("{{file}}", &name.replace('-', "_")).replace("{{name}}", name);
        let file = match (args.lang, file.strip_prefix("wit/")) {
            (Language::Js, Some(contract)) if !contract.starts_with(name.as_str()) => format!("steward-wit/{contract}"),
            _ => file,
        };
        write_file(&dir.join(&file), &text)?;
    }
    if matches!(args.lang, Language::Rust) && args.sdk.is_none() {
        for (file, text) in EMBEDDED_SDK {
            write_file(&dir.join(EMBEDDED_SDK_DIR).join(file), text)?;
        }
    }
    let file = name.replace('-', "_");
    println!("created {} ({name}); next:", dir.display());
    match args.lang {
        Language::Rust => {
            println!("  cd {} && cargo build --target wasm32-wasip2 --release", dir.display());
            println!("  steward plugin check target/wasm32-wasip2/release/{file}.wasm");
        }
        Language::Python | Language::Js => {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir.join("build.sh"), std::fs::Permissions::from_mode(0o755));
            println!("  cd {} && ./build.sh", dir.display());
            println!("  steward plugin check build/{file}.wasm --prop path=/state/marker --grant-dir /tmp:/state");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The crate `--sdk` names, as an absolute path (the project's manifest
/// must find it from wherever the project is built).
fn explicit_sdk(sdk: &Path) -> anyhow::Result<PathBuf> {
    let manifest = sdk.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "--sdk {}: no Cargo.toml there; pass the steward-sdk crate's directory, or leave --sdk out to use the SDK built into this binary",
            sdk.display()
        );
    }
    sdk.canonicalize().with_context(|| format!("--sdk {}: cannot resolve the path", sdk.display()))
}

/// Writes one file of the project, creating its directory.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A type's name as `plugin new NAME` takes it: a malformed one is a
/// usage error (exit code 2), before anything is written.
fn type_name(name: &str) -> Result<String, String> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!(
            "`{name}` is not a valid type name: use lowercase letters, digits and dashes, starting with a letter"
        ))
    }
}
