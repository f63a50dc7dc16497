//! The narrow wasmtime wrapper: the one place that builds an `Engine`, a
//! `Linker` or a `Store`, runs the epoch ticker, sizes the pooling allocator
//! and keeps the compiled-component cache.
//!
//! Everything else in the host goes through [`Runtime`], so engine settings
//! that matter for speed (see `WASMTIME-NOTES.md`: concurrency support off,
//! pooling) and for containment (epoch deadlines, memory caps, stack size,
//! the one WASI function the host guards) are decided here once.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, Resource};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

use crate::bindings::Plugin as PluginWorld;
use crate::error::{Error, Result};
use crate::grants::SymlinkRefused;
use crate::sandbox::SandboxState;

/// How often the epoch advances. A call that passes its deadline is stopped
/// at the next tick, so this bounds how late a hung call is cut off; a
/// ticker this slow costs nothing measurable.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The largest memory cap a resource may be given. Pooling reserves this
/// much address space (not memory) per instance slot.
pub const MAX_MEMORY_LIMIT_BYTES: usize = 256 << 20;

/// The wasm stack a guest may use before it traps with a stack overflow.
const MAX_WASM_STACK_BYTES: usize = 512 << 10;

/// The native stack each in-flight async call runs on; must exceed the wasm
/// stack plus the host frames of an import. Only touched pages are resident.
const ASYNC_STACK_BYTES: usize = 1 << 20;

/// Core instances one component may hold: a Rust component has two or three
/// (the module and shims); a Python one more than eight.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// Memories and tables one component may hold.
const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
const MAX_TABLES_PER_COMPONENT: u32 = 8;

/// How the sandbox engine is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The most instances alive at once in this process (the pooling
    /// allocator reserves slots for them up front).
    pub max_live_instances: u32,
    /// Where compiled components are cached; none disables the cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { max_live_instances: 1_100, cache_dir: None }
    }
}

/// Counters that show what the runtime did (for logs, metrics and tests).
#[derive(Debug, Default)]
pub struct RuntimeStats {
    /// Components compiled from `.wasm`.
    pub compiled: AtomicU64,
    /// Components loaded from the compile cache.
    pub loaded_from_cache: AtomicU64,
}

/// The engine, the linker with every host import, and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<SandboxState>,
    cache_dir: Option<PathBuf>,
    stats: RuntimeStats,
    ticker: Ticker,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy)]
pub struct LoadInfo {
    /// Whether it was compiled now (rather than read from the cache).
    pub compiled: bool,
    /// How long loading took.
    pub elapsed: Duration,
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(config: &RuntimeConfig) -> Result<Arc<Runtime>> {
        let engine = Engine::new(&engine_config(config)).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| Error::Engine(format!("{e:#}")))?;
        PluginWorld::add_to_linker::<SandboxState, wasmtime::component::HasSelf<SandboxState>>(&mut linker, |state| {
            state
        })
        .map_err(|e| Error::Engine(format!("{e:#}")))?;
        guard_symlinks(&mut linker).map_err(|e| Error::Engine(format!("{e:#}")))?;
        if let Some(dir) = &config.cache_dir {
            fs::create_dir_all(dir).map_err(|source| Error::Cache { path: dir.clone(), source })?;
        }
        let ticker = Ticker::start(engine.clone());
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache_dir: config.cache_dir.clone(),
            stats: RuntimeStats::default(),
            ticker,
        }))
    }

    /// The engine (for bindings that need it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker holding WASI and Steward's host imports.
    pub fn linker(&self) -> &Linker<SandboxState> {
        &self.linker
    }

    /// What the runtime has done so far.
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// Compiles `bytes` (read from `path`), or loads the compiled form from
    /// the cache when the same bytes were compiled by a compatible engine.
    pub fn load_component(&self, path: &Path, bytes: &[u8]) -> Result<(Component, LoadInfo), String> {
        let started = Instant::now();
        let cached = self.cache_dir.as_ref().map(|dir| dir.join(format!("{}.cwasm", self.cache_key(bytes))));
        if let Some(cached) = cached.as_ref().filter(|file| file.exists()) {
            // SAFETY: files in the cache directory are written only by
            // `store_in_cache` below from `Component::serialize` of this
            // engine configuration (the key includes the engine's
            // compatibility hash), and are renamed into place only when
            // complete. A file that fails to load is removed and recompiled.
            match unsafe { Component::deserialize_file(&self.engine, cached) } {
                Ok(component) => {
                    self.stats.loaded_from_cache.fetch_add(1, Ordering::Relaxed);
                    // A hit counts as a use: `trim_dir` keeps the newest.
                    mark_used(cached);
                    return Ok((component, LoadInfo { compiled: false, elapsed: started.elapsed() }));
                }
                Err(error) => {
                    tracing::warn!(cache = %cached.display(), %error, "dropping unusable compiled component");
                    let _ = fs::remove_file(cached);
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| one_line(&e))?;
        self.stats.compiled.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(plugin = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "compiled component");
        if let Some(cached) = cached
            && let Err(error) = store_in_cache(&component, &cached)
        {
            tracing::warn!(cache = %cached.display(), %error, "cannot cache compiled component; continuing without");
        }
        Ok((component, LoadInfo { compiled: true, elapsed: started.elapsed() }))
    }

    /// A new store for one instance, with its memory cap and the epoch
    /// callback that ends a call once its deadline has passed.
    pub fn new_store(&self, state: SandboxState) -> Store<SandboxState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut context| {
            let state = context.data_mut();
            if state.clock.deadline_passed() {
                state.clock.deadline_hit = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Give the executor a turn every tick of a long call, so a
                // busy guest cannot starve the other resources' tasks.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        store
    }

    /// Removes compiled components that no current plugin version uses:
    /// those of replaced files and those of an older engine (whose
    /// compatibility hash differs). Returns how many went.
    pub fn prune_cache(&self, keep: &std::collections::HashSet<String>) -> usize {
        self.cache_dir.as_deref().map_or(0, |dir| prune_dir(dir, keep))
    }

    pub(crate) fn cache_key(&self, bytes: &[u8]) -> String {
        let mut hasher = ShaHasher(Sha256::new());
        hasher.0.update(bytes);
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        hex(&hasher.0.finalize())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// Removes the files of `dir` whose name, less its extension, is not in
/// `keep`: stale entries of a content-addressed directory. Returns how
/// many went.
pub fn prune_dir(dir: &Path, keep: &std::collections::HashSet<String>) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if !keep.contains(stem) && fs::remove_file(&path).is_ok() {
            tracing::info!(file = %path.display(), "dropped a stale entry");
            removed += 1;
        }
    }
    removed
}

/// Removes the least recently used files of `dir` until what is left
/// takes at most `budget` bytes: the bound of a cache that, unlike the
/// daemon's, does not know which entries are current (the one `plugin
/// check` keeps for a plugin author, who may rebuild a 40 MiB Python
/// component a hundred times a day). Use is the modification time, which
/// a cache hit refreshes. Returns how many went.
pub fn trim_dir(dir: &Path, budget: u64) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut files: Vec<(std::time::SystemTime, u64, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok().filter(|meta| meta.is_file())?;
            Some((meta.modified().ok()?, meta.len(), entry.path()))
        })
        .collect();
    files.sort_by_key(|(used, _, _)| std::cmp::Reverse(*used));
    let mut kept = 0u64;
    let mut removed = 0;
    for (_, len, path) in files {
        if kept.saturating_add(len) <= budget {
            kept += len;
        } else if fs::remove_file(&path).is_ok() {
            tracing::debug!(file = %path.display(), "dropped a least recently used entry");
            removed += 1;
        }
    }
    removed
}

/// Sets a cache file's modification time to now; a failure only makes the
/// entry look older to [`trim_dir`].
fn mark_used(path: &Path) {
    if let Ok(file) = fs::File::options().append(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// The sha256 of a file's bytes, in hex: a plugin's identity.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A wasmtime error as one line, for one-line reports: its chain joined,
/// reason first.
///
/// When a host import fails (for example, a guest passes an argument whose
/// length runs past its memory), wasmtime adds the guest's wasm backtrace
/// as the outermost context, so the plain chain would open with a dozen
/// frames of function indexes and end with the reason. The backtrace is
/// left out here; [`wasm_backtrace`] gives it to whoever logs it.
pub fn one_line(error: &wasmtime::Error) -> String {
    let backtrace = wasm_backtrace(error);
    let reasons: Vec<String> =
        error.chain().map(ToString::to_string).filter(|text| backtrace.as_ref() != Some(text)).collect();
    reasons.join(": ").replace('\n', " ")
}

/// The wasm backtrace wasmtime attached to `error`, if any, as text.
pub fn wasm_backtrace(error: &wasmtime::Error) -> Option<String> {
    error.downcast_ref::<wasmtime::WasmBacktrace>().map(ToString::to_string)
}

/// The WASI interface holding `symlink-at`, at the exact version
/// wasmtime-wasi defines it (its `p2/wit/deps/filesystem.wit`). Guests
/// importing any 0.2.x reach that definition by semver matching.
const WASI_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// The WASI function that makes a symlink.
const WASI_SYMLINK_AT: &str = "[method]descriptor.symlink-at";

/// Replaces WASI's `symlink-at` with one that first asks the sandbox
/// whether the target stays inside the granted directory
/// ([`crate::grants::SymlinkGuard`]), then does what WASI does. WASI itself
/// refuses only absolute targets; a relative one such as
/// `../../etc/passwd` it makes, and an unsandboxed program would follow.
///
/// Shadowing one function keeps the rest of wasmtime-wasi untouched,
/// rather than wrapping its whole filesystem host.
fn guard_symlinks(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::filesystem::types::{ErrorCode, Host, HostDescriptor};

    let mut types = linker.instance(WASI_FILESYSTEM_TYPES)?;
    // A guard defined under a name wasmtime-wasi does not use would be
    // silently bypassed (guests would link to wasmtime-wasi's newer
    // version): so first make sure the name is taken, which defining it
    // again without shadowing tells. That definition always fails.
    let probe = types.func_wrap(WASI_SYMLINK_AT, |_store, (): ()| Ok(()));
    if probe.is_ok() {
        wasmtime::bail!(
            "wasmtime-wasi no longer defines `{WASI_FILESYSTEM_TYPES}`; update WASI_FILESYSTEM_TYPES in host/src/runtime.rs to its version"
        );
    }
    linker.allow_shadowing(true);
    let mut types = linker.instance(WASI_FILESYSTEM_TYPES)?;
    let guarded = types.func_wrap_async(
        WASI_SYMLINK_AT,
        |mut store, (descriptor, target, link): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let refused = match state.check_symlink(&descriptor, &link, &target) {
                    Ok(()) => None,
                    // Refused as WASI refuses an absolute target.
                    Err(SymlinkRefused::Escapes(_)) => Some(ErrorCode::NotPermitted),
                    Err(SymlinkRefused::Unresolved(error)) => Some(ErrorCode::from(error)),
                };
                if let Some(code) = refused {
                    return Ok((Err(code),));
                }
                let mut filesystem = state.filesystem();
                match HostDescriptor::symlink_at(&mut filesystem, descriptor, target, link).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(error) => Ok((Err(Host::convert_error_code(&mut filesystem, error)?),)),
                }
            })
        },
    );
    linker.allow_shadowing(false);
    guarded
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut engine = Config::new();
    engine.wasm_component_model(true);
    // Measured: the component-model-async bookkeeping this turns on costs
    // 2-4x on every call, and the contract uses no async WIT functions.
    engine.concurrency_support(false);
    engine.epoch_interruption(true);
    engine.max_wasm_stack(MAX_WASM_STACK_BYTES);
    engine.async_stack_size(ASYNC_STACK_BYTES);
    engine.memory_reservation(MAX_MEMORY_LIMIT_BYTES as u64);
    let slots = config.max_live_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(3))
        .total_memories(slots)
        .total_tables(slots.saturating_mul(2))
        .total_stacks(slots)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_memory_size(MAX_MEMORY_LIMIT_BYTES);
    engine.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    engine
}

fn store_in_cache(component: &Component, cached: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(|e| std::io::Error::other(one_line(&e)))?;
    let partial = cached.with_extension("partial");
    let mut file = fs::File::create(&partial)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    fs::rename(&partial, cached)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Feeds `Hash` output into sha256, so the engine's compatibility hash has a
/// stable digest across processes (std's hashers are randomly seeded).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Guest calls and instantiations in flight in this process. The epoch
/// ticker sleeps while there are none: a daemon that hosts no instances,
/// or a worker between probes, then costs no wakeups.
static GUEST_WORK: AtomicUsize = AtomicUsize::new(0);

/// The ticker threads to wake when guest work begins.
static TICKERS: Mutex<Vec<Thread>> = Mutex::new(Vec::new());

/// Held while guest code may run, so that the epoch advances and a call
/// can be cut off at its deadline.
#[must_use = "the epoch advances only while this is held"]
pub(crate) struct EpochAwake(());

impl EpochAwake {
    pub(crate) fn hold() -> EpochAwake {
        if GUEST_WORK.fetch_add(1, Ordering::SeqCst) == 0 {
            // A ticker that saw no work parks; unparking one that has not
            // parked yet leaves a token, so no wakeup is lost.
            if let Ok(tickers) = TICKERS.lock() {
                tickers.iter().for_each(Thread::unpark);
            }
        }
        EpochAwake(())
    }
}

impl Drop for EpochAwake {
    fn drop(&mut self) {
        GUEST_WORK.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`] while
/// guest work is in flight.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("steward-epoch".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                    if GUEST_WORK.load(Ordering::SeqCst) == 0 {
                        std::thread::park();
                    }
                }
            })
            .ok();
        match &thread {
            Some(thread) => {
                if let Ok(mut tickers) = TICKERS.lock() {
                    tickers.push(thread.thread().clone());
                }
            }
            None => {
                tracing::error!("cannot start the epoch ticker thread; call deadlines rely on async timeouts alone")
            }
        }
        Ticker { stop, thread }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let id = thread.thread().id();
            if let Ok(mut tickers) = TICKERS.lock() {
                tickers.retain(|ticker| ticker.id() != id);
            }
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn trim_dir_keeps_the_most_recently_used_files_within_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        for (age_minutes, name) in [(30, "old"), (20, "middle"), (10, "newest")] {
            let path = dir.path().join(format!("{name}.cwasm"));
            fs::write(&path, vec![0u8; 100]).expect("write");
            let file = fs::File::options().append(true).open(&path).expect("open");
            file.set_modified(an_hour_ago + Duration::from_secs(60 * (60 - age_minutes))).expect("mtime");
        }
        // A hit makes the oldest the newest.
        mark_used(&dir.path().join("old.cwasm"));

        assert_eq!(trim_dir(dir.path(), 250), 1);
        let mut left: Vec<String> =
            fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
        left.sort();
        assert_eq!(left, ["newest.cwasm", "old.cwasm"]);
        assert_eq!(trim_dir(dir.path(), 250), 0, "within the budget nothing goes");
    }
}
