//! A resource type loaded from a `.wasm` file: compiled (or taken from the
//! cache), linked against the host's imports, and asked for its metadata.
//!
//! Loading is where bad files are caught, each with one line that names the
//! file and says what is wrong: empty, not WebAssembly, a core module rather
//! than a component, truncated or malformed, a plugin built for another
//! version of the contract, a component of another world, or a plugin whose
//! `metadata` call fails. Nothing here panics on input.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::bindings::{Plugin as PluginWorld, PluginPre, Problem, TypeInfo};
use wasmtime::Store;
use wasmtime::component::ComponentExportIndex;

use crate::call::{CallError, Operation, begin_call, finish_call, timed};
use crate::error::{Error, Result};
use crate::runtime::{LoadInfo, Runtime, content_hash, one_line};
use crate::sandbox::SandboxState;

/// The version of the `steward:resource` contract (`wit/`) this host
/// speaks; a unit test keeps it equal to the package's version.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The WIT export every plugin must provide, as operators will read it.
pub const EXPORT_NAME: &str = "steward:resource/resource-type@0.1.0";

/// How the contract's interfaces are named in a component's imports and
/// exports, before the interface name and `@version`.
const CONTRACT_PACKAGE_PREFIX: &str = "steward:resource/";

/// The longest a `metadata` or `validate` call may take.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// The memory a `metadata` or `validate` call may use.
const METADATA_MEMORY_BYTES: usize = 64 << 20;

/// The largest plugin file read. A Python component is about 18 MiB and
/// a JavaScript one about 12 MiB; eight times that leaves room for fat
/// toolchains while a runaway or hostile file (`/dev/zero`, a disk image
/// dropped in the plugin directory) is refused before it is read.
pub const MAX_PLUGIN_FILE_BYTES: u64 = 128 << 20;

/// The first bytes of every wasm binary, module or component.
const WASM_MAGIC: &[u8] = b"\0asm";

/// Size of the header of a wasm binary: magic and version/layer.
const WASM_HEADER_BYTES: usize = 8;

/// A loaded resource type, ready to instantiate.
pub struct Plugin {
    looks_alive_export: ComponentExportIndex,
    path: PathBuf,
    /// The content-addressed copy workers load, when loaded versioned.
    version_file: Option<PathBuf>,
    hash: String,
    cache_key: String,
    pre: PluginPre<SandboxState>,
    metadata: TypeInfo,
    load: LoadInfo,
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("path", &self.path).field("type", &self.metadata.name).finish()
    }
}

impl Plugin {
    /// Loads the plugin at `path` and reads its metadata.
    pub async fn load(runtime: &Arc<Runtime>, path: &Path) -> Result<Plugin> {
        let bytes = read_plugin_file(path)?;
        Self::from_bytes(runtime, path, &bytes).await
    }

    /// Loads the plugin at `path` and keeps a copy of the exact bytes loaded
    /// in `versions`, named by their hash: monitor workers load that copy,
    /// so a resource keeps its version when the file in the plugin
    /// directory is replaced or removed.
    pub async fn load_versioned(runtime: &Arc<Runtime>, path: &Path, versions: &Path) -> Result<Plugin> {
        let bytes = read_plugin_file(path)?;
        let mut plugin = Self::from_bytes(runtime, path, &bytes).await?;
        let copy = versions.join(format!("{}.wasm", plugin.hash));
        if !copy.exists() {
            let partial = copy.with_extension("partial");
            let write = std::fs::create_dir_all(versions)
                .and_then(|()| std::fs::write(&partial, &bytes))
                .and_then(|()| std::fs::rename(&partial, &copy));
            write.map_err(|source| Error::PluginRead { path: copy.clone(), source })?;
        }
        plugin.version_file = Some(copy);
        Ok(plugin)
    }

    async fn from_bytes(runtime: &Arc<Runtime>, path: &Path, bytes: &[u8]) -> Result<Plugin> {
        let invalid = |reason: String| Error::PluginInvalid { path: path.to_path_buf(), reason };
        check_header(bytes).map_err(invalid)?;
        let (component, load) = runtime
            .load_component(path, bytes)
            .map_err(|e| invalid(format!("malformed or truncated component ({e}); rebuild the plugin")))?;
        // Before linking: a plugin of another contract version would
        // otherwise be told only that an import or export is missing.
        if let Some(version) = other_contract_version(runtime, &component) {
            return Err(invalid(format!(
                "built for contract {version}, this host speaks {CONTRACT_VERSION}; rebuild the plugin against the {CONTRACT_VERSION} contract (steward-sdk {CONTRACT_VERSION}) or run a host that speaks {version}"
            )));
        }
        let instance_pre = runtime.linker().instantiate_pre(&component).map_err(|e| {
            invalid(format!(
                "not a Steward plugin: it needs an import the host does not provide ({}); build it for the steward:resource/plugin world",
                one_line(&e)
            ))
        })?;
        let pre = PluginPre::new(instance_pre).map_err(|e| {
            invalid(format!(
                "not a Steward plugin: it does not export `{EXPORT_NAME}` ({}); build it for the steward:resource/plugin world",
                one_line(&e)
            ))
        })?;
        let metadata =
            call_metadata(runtime, &pre).await.map_err(|e| invalid(format!("its `metadata` call failed: {e}")))?;
        if metadata.name.trim().is_empty() {
            return Err(invalid("its metadata has an empty type name; set one".to_string()));
        }
        let looks_alive_export = component
            .get_export_index(None, EXPORT_NAME)
            .and_then(|interface| component.get_export_index(Some(&interface), "[method]instance.looks-alive"))
            .ok_or_else(|| invalid(format!("not a Steward plugin: `{EXPORT_NAME}` has no instance.looks-alive")))?;
        Ok(Plugin {
            looks_alive_export,
            path: path.to_path_buf(),
            version_file: None,
            hash: content_hash(bytes),
            cache_key: runtime.cache_key(bytes),
            pre,
            metadata,
            load,
            runtime: runtime.clone(),
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file a monitor worker loads this exact version from.
    pub fn version_file(&self) -> &Path {
        self.version_file.as_deref().unwrap_or(&self.path)
    }

    /// The sha256 of the file, in hex.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Its key in the compile cache.
    pub fn cache_key(&self) -> &str {
        &self.cache_key
    }

    /// What the type says about itself.
    pub fn metadata(&self) -> &TypeInfo {
        &self.metadata
    }

    /// The type's name.
    pub fn type_name(&self) -> &str {
        &self.metadata.name
    }

    /// How the component was obtained (compiled or cached) and how long it took.
    pub fn load_info(&self) -> LoadInfo {
        self.load
    }

    pub(crate) fn looks_alive_export(&self) -> &ComponentExportIndex {
        &self.looks_alive_export
    }

    pub(crate) fn pre(&self) -> &PluginPre<SandboxState> {
        &self.pre
    }

    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Checks `properties` for resource `resource`: first against the
    /// schema (unknown, missing, wrong kind), then with the plugin's own
    /// `validate`, in a throwaway sandbox.
    pub async fn validate(&self, resource: &str, properties: &[(String, String)]) -> Result<(), Error> {
        let invalid = |problems: Vec<Problem>| Error::InvalidProperties { resource: resource.to_string(), problems };
        let problems = crate::properties::check(&self.metadata.properties, properties);
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        let outcome = self.plugin_validate(resource, properties).await;
        match outcome.map_err(|source| Error::Call { resource: resource.to_string(), source })? {
            Ok(()) => Ok(()),
            Err(problems) => Err(invalid(problems)),
        }
    }

    /// The plugin's own `validate`, without the host's schema check first
    /// (the conformance check uses it to see what the plugin itself rejects).
    pub async fn plugin_validate(
        &self,
        resource: &str,
        properties: &[(String, String)],
    ) -> Result<Result<(), Vec<Problem>>, CallError> {
        let (mut store, bindings) = scratch_instance(&self.runtime, &self.pre, resource).await?;
        let ticket = begin_call(&mut store, METADATA_TIMEOUT);
        let properties = properties.to_vec();
        let call = bindings.steward_resource_resource_type().call_validate(&mut store, &properties);
        let raw = timed(ticket.deadline, call).await;
        finish_call(&mut store, Operation::Validate, METADATA_TIMEOUT, raw)
    }
}

async fn call_metadata(runtime: &Runtime, pre: &PluginPre<SandboxState>) -> Result<TypeInfo, CallError> {
    let (mut store, bindings) = scratch_instance(runtime, pre, "(metadata)").await?;
    let ticket = begin_call(&mut store, METADATA_TIMEOUT);
    let call = bindings.steward_resource_resource_type().call_metadata(&mut store);
    let raw = timed(ticket.deadline, call).await;
    finish_call(&mut store, Operation::Metadata, METADATA_TIMEOUT, raw)
}

/// A sandbox with no grants, for calls that need no resource.
async fn scratch_instance(
    runtime: &Runtime,
    pre: &PluginPre<SandboxState>,
    label: &str,
) -> Result<(Store<SandboxState>, PluginWorld), CallError> {
    let mut store = runtime.new_store(SandboxState::ungranted(label, METADATA_MEMORY_BYTES));
    let _awake = crate::runtime::EpochAwake::hold();
    let bindings =
        pre.instantiate_async(&mut store).await.map_err(|e| CallError::Instantiate { message: one_line(&e) })?;
    Ok((store, bindings))
}

/// Reads a plugin file whole, refusing what is not a regular file (a FIFO
/// would block the reader forever, a device never ends) and what is larger
/// than [`MAX_PLUGIN_FILE_BYTES`], without reading more than that.
pub fn read_plugin_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let read_error = |source| Error::PluginRead { path: path.to_path_buf(), source };
    let invalid = |reason: String| Error::PluginInvalid { path: path.to_path_buf(), reason };
    // Looked at before opening: opening a FIFO blocks until a writer comes.
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if !metadata.is_file() {
        return Err(invalid(format!(
            "not a regular file ({}); a plugin is a `.wasm` file",
            describe_file_type(&metadata.file_type())
        )));
    }
    let too_large = || {
        invalid(format!(
            "larger than the {} MiB a plugin file may be; is it really a component?",
            MAX_PLUGIN_FILE_BYTES >> 20
        ))
    };
    if metadata.len() > MAX_PLUGIN_FILE_BYTES {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    // One byte past the cap tells a file at the cap from one over it, even
    // if the file grew after it was looked at.
    file.take(MAX_PLUGIN_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_PLUGIN_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

fn describe_file_type(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Rejects what is plainly not a component before the compiler sees it, so
/// the common mistakes get a precise line.
fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    if bytes.is_empty() {
        return Err("the file is empty; expected a WebAssembly component (.wasm) built for Steward".into());
    }
    let magic = &bytes[..bytes.len().min(WASM_MAGIC.len())];
    if magic != &WASM_MAGIC[..magic.len()] {
        return Err("not a WebAssembly file (no `\\0asm` header); expected a component built for Steward".into());
    }
    // The start of a wasm header, then nothing: a copy or download cut short.
    if bytes.len() < WASM_HEADER_BYTES {
        return Err(format!(
            "truncated: too short to be a component ({} bytes; its header alone is {WASM_HEADER_BYTES}); copy the whole file again or rebuild the plugin",
            bytes.len()
        ));
    }
    // Bytes 4..8: a core module has version 1, layer 0; a component has layer 1.
    if bytes[6..8] == [0, 0] {
        return Err(
            "a core WebAssembly module, not a component; build for the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
                .into(),
        );
    }
    Ok(())
}

/// The contract version a component was built for, when its imports or
/// exports name `steward:resource` at a version this host cannot serve.
/// Only the version is read from the name: whatever else is wrong with the
/// component, linking reports.
fn other_contract_version(runtime: &Runtime, component: &wasmtime::component::Component) -> Option<String> {
    let engine = runtime.engine();
    let component_type = component.component_type();
    let imports = component_type.imports(engine).map(|(name, _)| name);
    let exports = component_type.exports(engine).map(|(name, _)| name);
    imports
        .chain(exports)
        .filter_map(|name| name.strip_prefix(CONTRACT_PACKAGE_PREFIX)?.split_once('@').map(|(_, version)| version))
        .find(|version| semver_track(version) != semver_track(CONTRACT_VERSION))
        .map(str::to_string)
}

/// The part of a version that must match for the linker to serve one with
/// the other, as wasmtime matches interface versions: `0.1` for `0.1.x`,
/// `1` for `1.x.y`, the whole version when it has a pre-release part. A
/// plugin of a compatible version that needs something this host lacks is
/// left to the linker's error.
fn semver_track(version: &str) -> &str {
    if version.contains('-') {
        return version;
    }
    let mut parts = version.splitn(3, '.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    let end = if major == "0" { major.len() + 1 + minor.len() } else { major.len() };
    version.get(..end).unwrap_or(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_version_is_the_wit_package_version() {
        let wit = include_str!("../../../wit/resource.wit");
        let package = format!("package steward:%resource@{CONTRACT_VERSION};");
        assert!(wit.lines().any(|line| line.trim() == package), "wit/resource.wit does not declare {package}");
        assert!(EXPORT_NAME.ends_with(&format!("@{CONTRACT_VERSION}")), "{EXPORT_NAME}");
    }

    #[test]
    fn only_incompatible_contract_versions_differ() {
        assert_eq!(semver_track("0.1.0"), semver_track("0.1.7"));
        assert_ne!(semver_track("0.1.0"), semver_track("0.2.0"));
        assert_ne!(semver_track("0.1.0"), semver_track("0.1.0-rc1"));
        assert_eq!(semver_track("1.2.3"), "1");
        assert_eq!(semver_track("0"), "0");
        assert_eq!(semver_track("garbage"), "garbage");
    }

    #[test]
    fn header_checks_name_each_short_file() {
        let message = |bytes: &[u8]| check_header(bytes).expect_err("refused");
        assert!(message(b"").contains("empty"));
        for cut in [&b"\0"[..], b"\0asm", b"\0asm\x0d\0\x01"] {
            let text = message(cut);
            assert!(text.starts_with("truncated") && text.contains(&format!("{} bytes", cut.len())), "{text}");
        }
        for other in [&b"MZ"[..], b"#!/bin/sh\n", b"\0asx\x01\0\0\0"] {
            assert!(message(other).contains("no `\\0asm` header"), "{}", message(other));
        }
        assert!(message(b"\0asm\x01\0\0\0").contains("core WebAssembly module"));
        check_header(b"\0asm\x0d\0\x01\0").expect("a component header");
    }
}
