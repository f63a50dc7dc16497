//! The monitor benchmark: every figure measured side by side in one run,
//! written to `target/bench/monitor.json` and printed. Run it with
//! `cargo xtask bench` (which builds the guest components first).
//!
//! Figures (see the foundation issue for targets):
//! - `looks_alive_ns`: one looks-alive on a warm `dummy` through the
//!   monitor's own call path (deadline, serialization, classification);
//! - `bare_call_ns`: the same export on a bare wasmtime instance, called
//!   synchronously with nothing around it; `bare_async_call_ns` the same
//!   call made the async way the monitor must make it (for deadlines);
//! - `cold_call_ns` and `cold_async_call_ns`: the same two calls spread
//!   round-robin over 5,000 bare instances, as a node probing 10,000
//!   resources makes them: every call finds its store out of the caches.
//!   This is the floor under the daemon bench's density figure;
//!   `cold_looks_alive_ns` the monitor's own call path over 5,000 `dummy`
//!   resources (what the worker's prober adds comes on top);
//! - `native_call_ns`: the same check through a native trait object;
//! - `ocf_dummy_monitor_ns`: `Dummy monitor` by fork and exec, when
//!   Debian's `resource-agents` is installed;
//! - `is_alive_file_ns`: `file-marker`'s is-alive, which reads a small file
//!   through a preopen;
//! - `instantiate_us`: a new instance from the cached compiled component,
//!   store and instantiation alone; `reopen_us` the monitor's whole path
//!   (store, instantiation and the plugin's `open`);
//! - `instance_kib`: resident memory per live `dummy` instance after one
//!   online and is-alive, over 1,000 instances;
//! - `hang_overrun_ms`: how long past its deadline a looping call returns
//!   (the worst of several);
//! - `{rust,python,js}_marker_wasm_kib` and `..._instantiate_us`: the same
//!   file-marker type built from Rust, Python (componentize-py) and
//!   JavaScript (jco), when `cargo xtask examples` has built the latter two.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use steward_config::grants::DirectoryGrant;
use steward_monitor::bindings::{CheckLevel, Plugin as PluginWorld};
use steward_monitor::monitor::{Monitor, ResourceHandle, ResourceSpec};
use steward_monitor::plugin::Plugin;
use steward_monitor::runtime::{Runtime, RuntimeConfig};
use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable, TypedFunc};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Live instances for the memory figure.
const DENSITY_INSTANCES: usize = 1_000;
/// Calls per timed batch; the figure is the median batch.
const CALLS_PER_BATCH: u32 = 20_000;
const BATCHES: usize = 15;

fn main() {
    // The workspace root: this crate is `host/monitor`.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).map(Path::to_path_buf).unwrap_or_default();
    let guests = root.join("target/wasm32-wasip2/guest");
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let cache = tempfile::tempdir().expect("cache dir");
    let config = RuntimeConfig { max_live_instances: COLD_INSTANCES + 64, cache_dir: Some(cache.path().to_path_buf()) };
    let runtime = Runtime::new(&config).expect("runtime");
    let mut figures = serde_json::Map::new();
    let mut record = |key: &str, value: f64| {
        println!("{key:<24} {value:>14.1}");
        figures.insert(key.to_string(), serde_json::json!((value * 10.0).round() / 10.0));
    };

    let dummy_path = guests.join("dummy.wasm");
    let dummy = tokio.block_on(load(&runtime, &dummy_path));
    let monitor = Monitor::new("bench");
    let warm = tokio.block_on(async {
        let handle = monitor.open(dummy.clone(), ResourceSpec::new("warm", &dummy)).await.expect("open");
        handle.online(&context()).await.expect("online");
        handle
    });
    record("looks_alive_ns", tokio.block_on(monitor_looks_alive_ns(&warm)));
    record("bare_call_ns", bare_sync_call_ns(&dummy_path));
    record("bare_async_call_ns", tokio.block_on(bare_async_call_ns(&dummy_path)));
    record("cold_call_ns", tokio.block_on(bare_cold_call_ns(&dummy_path, Calls::Sync)));
    record("cold_async_call_ns", tokio.block_on(bare_cold_call_ns(&dummy_path, Calls::Async)));
    record("cold_looks_alive_ns", tokio.block_on(cold_looks_alive_ns(&dummy, &monitor)));
    record("native_call_ns", native_call_ns());
    if let Some(ns) = ocf_dummy_monitor_ns() {
        record("ocf_dummy_monitor_ns", ns);
    }
    record("is_alive_file_ns", tokio.block_on(is_alive_file_ns(&runtime, &guests, &monitor)));
    let (instantiate, reopen) = tokio.block_on(instantiate_us(&runtime, &dummy_path, &warm));
    record("instantiate_us", instantiate);
    record("reopen_us", reopen);
    record("instance_kib", tokio.block_on(instance_kib(&dummy, &monitor)));
    record("hang_overrun_ms", tokio.block_on(hang_overrun_ms(&runtime, &guests, &monitor)));
    // The same component in three languages: size and instantiation.
    let examples = root.join("target/examples");
    for (key, path) in [
        ("rust", guests.join("file_marker.wasm")),
        ("python", examples.join("python_marker.wasm")),
        ("js", examples.join("js_marker.wasm")),
    ] {
        if let Ok(bytes) = std::fs::read(&path) {
            record(&format!("{key}_marker_wasm_kib"), bytes.len() as f64 / 1024.0);
            record(&format!("{key}_marker_instantiate_us"), tokio.block_on(instantiate_only_us(&runtime, &path, 200)));
        }
    }

    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let json = serde_json::to_string_pretty(&serde_json::Value::Object(figures)).expect("json");
    std::fs::write(out.join("monitor.json"), json + "\n").expect("write monitor.json");
    println!("wrote {}", out.join("monitor.json").display());
}

async fn load(runtime: &Arc<Runtime>, path: &Path) -> Arc<Plugin> {
    Arc::new(Plugin::load(runtime, path).await.unwrap_or_else(|e| panic!("{e} (run `cargo xtask guests` first)")))
}

fn context() -> steward_monitor::bindings::CallContext {
    steward_monitor::bindings::CallContext { node_name: "bench".into(), fencing_token: 1, attempt: 1 }
}

/// The median of timed batches of `CALLS_PER_BATCH` calls, per call, in ns.
fn median_ns(mut batch: impl FnMut() -> Duration) -> f64 {
    let mut per_call: Vec<f64> = (0..BATCHES).map(|_| batch().as_nanos() as f64 / f64::from(CALLS_PER_BATCH)).collect();
    per_call.sort_by(f64::total_cmp);
    per_call[BATCHES / 2]
}

async fn monitor_looks_alive_ns(handle: &ResourceHandle) -> f64 {
    let mut samples = Vec::new();
    for _ in 0..BATCHES {
        let started = Instant::now();
        for _ in 0..CALLS_PER_BATCH {
            black_box(handle.looks_alive().await.expect("probe"));
        }
        samples.push(started.elapsed());
    }
    let mut samples = samples.into_iter();
    median_ns(|| samples.next().unwrap_or_default())
}

/// Looks-alive through the monitor on each of [`COLD_INSTANCES`] resources
/// in turn; the resources are closed afterwards.
async fn cold_looks_alive_ns(dummy: &Arc<Plugin>, monitor: &Monitor) -> f64 {
    let mut handles = Vec::new();
    for i in 0..COLD_INSTANCES {
        let name = format!("cold{i}");
        handles.push(monitor.open(dummy.clone(), ResourceSpec::new(&name, dummy)).await.expect("open"));
    }
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for handle in &handles {
            black_box(handle.looks_alive().await.expect("probe"));
        }
        rounds.push(started.elapsed().as_nanos() as f64 / f64::from(COLD_INSTANCES));
    }
    for handle in handles {
        handle.close().await;
    }
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

/// State of the bare instance: WASI only; Steward's imports trap if called
/// (looks-alive of `dummy` calls none of them).
struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn bare_engine() -> Engine {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.concurrency_support(false);
    Engine::new(&config).expect("engine")
}

fn bare_store(engine: &Engine) -> Store<Bare> {
    Store::new(engine, Bare { wasi: WasiCtxBuilder::new().build(), table: ResourceTable::new() })
}

/// `log` does nothing (the plugin's `open` logs); every other Steward
/// import traps if called (looks-alive of `dummy` calls none).
fn bare_host_imports(linker: &mut Linker<Bare>, component: &Component) {
    let mut host = linker.instance("steward:resource/host@0.1.0").expect("host instance");
    host.func_wrap("log", |_store, _args: (steward_monitor::bindings::LogLevel, String, Vec<(String, String)>)| Ok(()))
        .expect("log");
    // What `dummy` calls on its way (a zero delay, its progress, the token).
    host.func_wrap("sleep-ms", |_store, _args: (u32,)| Ok(())).expect("sleep-ms");
    host.func_wrap("report-progress", |_store, _args: (String,)| Ok(())).expect("report-progress");
    host.func_wrap("fencing-token", |_store, _args: ()| Ok((0u64,))).expect("fencing-token");
    linker.define_unknown_imports_as_traps(component).expect("trap imports");
}

/// `[static]instance.open` of the resource-type export, typed.
type BareOpen = TypedFunc<
    (&'static str, &'static [(String, String)]),
    (Result<ResourceAny, steward_monitor::bindings::PluginError>,),
>;

/// `[static]instance.open` and `[method]instance.looks-alive` of the
/// resource-type export, typed.
fn bare_exports(
    instance: &wasmtime::component::Instance,
    store: &mut Store<Bare>,
) -> (BareOpen, TypedFunc<(ResourceAny,), (bool,)>) {
    let interface =
        instance.get_export_index(&mut *store, None, steward_monitor::plugin::EXPORT_NAME).expect("interface");
    let open = instance.get_export_index(&mut *store, Some(&interface), "[static]instance.open").expect("open");
    let probe =
        instance.get_export_index(&mut *store, Some(&interface), "[method]instance.looks-alive").expect("probe");
    let open = instance.get_typed_func(&mut *store, open).expect("typed open");
    let probe = instance.get_typed_func(&mut *store, probe).expect("typed probe");
    (open, probe)
}

/// Looks-alive on a bare instance, called synchronously through the export
/// found by name, with nothing of Steward's around it.
fn bare_sync_call_ns(path: &Path) -> f64 {
    let engine = bare_engine();
    let component = Component::from_file(&engine, path).expect("component");
    let mut linker: Linker<Bare> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
    bare_host_imports(&mut linker, &component);
    let mut store = bare_store(&engine);
    let instance = linker.instantiate(&mut store, &component).expect("instantiate");
    let (open, probe) = bare_exports(&instance, &mut store);
    let (opened,) = open.call(&mut store, ("bare", &[])).expect("open call");
    let resource = opened.expect("opened");
    median_ns(|| {
        let started = Instant::now();
        for _ in 0..CALLS_PER_BATCH {
            let (alive,) = probe.call(&mut store, (resource,)).expect("call");
            black_box(alive);
        }
        started.elapsed()
    })
}

async fn bare_async_call_ns(path: &Path) -> f64 {
    let engine = bare_engine();
    let component = Component::from_file(&engine, path).expect("component");
    let mut linker: Linker<Bare> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
    bare_host_imports(&mut linker, &component);
    let mut store = bare_store(&engine);
    let bindings = PluginWorld::instantiate_async(&mut store, &component, &linker).await.expect("instantiate");
    let guest = bindings.steward_resource_resource_type().instance();
    let resource = guest.call_open(&mut store, "bare", &Vec::new()).await.expect("open").expect("opened");
    let mut samples = Vec::new();
    for _ in 0..BATCHES {
        let started = Instant::now();
        for _ in 0..CALLS_PER_BATCH {
            black_box(guest.call_looks_alive(&mut store, resource).await.expect("call"));
        }
        samples.push(started.elapsed());
    }
    let mut samples = samples.into_iter();
    median_ns(|| samples.next().unwrap_or_default())
}

/// Instances in the cold-call figures: enough that every call finds its
/// store out of the caches (their memory is far past the L3), and few
/// enough that the monitor's own instances stay within the mappings one
/// process may hold beside the bench's other instances.
const COLD_INSTANCES: u32 = 5_000;

#[derive(Clone, Copy, PartialEq)]
enum Calls {
    Sync,
    Async,
}

/// Looks-alive on each of [`COLD_INSTANCES`] bare instances in turn, in an
/// engine set up as the monitor's (pooling, epochs), with nothing of
/// Steward's around the call.
async fn bare_cold_call_ns(path: &Path, calls: Calls) -> f64 {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.concurrency_support(false);
    config.epoch_interruption(true);
    config.memory_reservation(64 << 20);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(COLD_INSTANCES)
        .total_core_instances(COLD_INSTANCES * 3)
        .total_memories(COLD_INSTANCES)
        .total_tables(COLD_INSTANCES * 2)
        .total_stacks(COLD_INSTANCES)
        .max_memory_size(64 << 20);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).expect("engine");
    let component = Component::from_file(&engine, path).expect("component");
    let mut linker: Linker<Bare> = Linker::new(&engine);
    match calls {
        Calls::Sync => wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi"),
        Calls::Async => wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi"),
    }
    bare_host_imports(&mut linker, &component);
    let pre = linker.instantiate_pre(&component).expect("instantiate_pre");
    let mut instances = Vec::new();
    for _ in 0..COLD_INSTANCES {
        let mut store = bare_store(&engine);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = pre.instantiate_async(&mut store).await.expect("instantiate");
        let (open, probe) = bare_exports(&instance, &mut store);
        let (opened,) = open.call_async(&mut store, ("cold", &[])).await.expect("open call");
        instances.push((store, opened.expect("opened"), probe));
    }
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for (store, resource, probe) in instances.iter_mut() {
            let (alive,) = match calls {
                Calls::Sync => probe.call(&mut *store, (*resource,)).expect("call"),
                Calls::Async => probe.call_async(&mut *store, (*resource,)).await.expect("call"),
            };
            black_box(alive);
        }
        rounds.push(started.elapsed().as_nanos() as f64 / f64::from(COLD_INSTANCES));
    }
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

trait Probe {
    fn looks_alive(&mut self) -> bool;
}

struct NativeDummy {
    online: bool,
    probes: u64,
}

impl Probe for NativeDummy {
    fn looks_alive(&mut self) -> bool {
        self.probes += 1;
        self.online
    }
}

fn native_call_ns() -> f64 {
    let mut native: Box<dyn Probe> = Box::new(NativeDummy { online: true, probes: 0 });
    let probe: &mut dyn Probe = black_box(native.as_mut());
    median_ns(|| {
        let started = Instant::now();
        for _ in 0..CALLS_PER_BATCH {
            black_box(probe.looks_alive());
        }
        started.elapsed()
    })
}

/// `Dummy monitor` by fork and exec, as Pacemaker's executor runs it.
fn ocf_dummy_monitor_ns() -> Option<f64> {
    let agent = PathBuf::from("/usr/lib/ocf/resource.d/heartbeat/Dummy");
    if !agent.is_file() {
        return None;
    }
    let state = tempfile::tempdir().ok()?;
    let state_file = state.path().join("dummy.state");
    let run = |action: &str| {
        std::process::Command::new(&agent)
            .arg(action)
            .env("OCF_ROOT", "/usr/lib/ocf")
            .env("OCF_RESOURCE_INSTANCE", "bench")
            .env("OCF_RESKEY_state", &state_file)
            .output()
    };
    run("start").ok()?;
    const RUNS: u32 = 200;
    let started = Instant::now();
    for _ in 0..RUNS {
        let output = run("monitor").ok()?;
        if output.status.code() != Some(0) {
            return None;
        }
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(RUNS);
    let _ = run("stop");
    Some(ns)
}

async fn is_alive_file_ns(runtime: &Arc<Runtime>, guests: &Path, monitor: &Monitor) -> f64 {
    let marker = load(runtime, &guests.join("file_marker.wasm")).await;
    let state = tempfile::tempdir().expect("state dir");
    let mut spec = ResourceSpec::new("marker", &marker);
    spec.properties = vec![("path".into(), "/state/marker".into())];
    spec.grants.directories =
        vec![DirectoryGrant { host_path: state.path().to_path_buf(), guest_path: "/state".into(), read_only: false }];
    let handle = monitor.open(marker, spec).await.expect("open");
    handle.online(&context()).await.expect("online");
    const RUNS: u32 = 2_000;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..RUNS {
            assert!(handle.is_alive(CheckLevel::Normal).await.expect("probe").alive);
        }
        samples.push(started.elapsed().as_nanos() as f64 / f64::from(RUNS));
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Store and instantiation alone, from the compiled, cached component.
async fn instantiate_only_us(runtime: &Arc<Runtime>, path: &Path, runs: u32) -> f64 {
    let bytes = std::fs::read(path).expect("component file");
    let (component, _) = runtime.load_component(path, &bytes).expect("component");
    let pre = runtime.linker().instantiate_pre(&component).expect("pre");
    let started = Instant::now();
    for _ in 0..runs {
        let mut store = runtime.new_store(steward_monitor::sandbox::SandboxState::ungranted("bench", 64 << 20));
        black_box(pre.instantiate_async(&mut store).await.expect("instantiate"));
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(runs)
}

async fn instantiate_us(runtime: &Arc<Runtime>, path: &Path, warm: &ResourceHandle) -> (f64, f64) {
    const RUNS: u32 = 2_000;
    let instantiate = instantiate_only_us(runtime, path, RUNS).await;
    let started = Instant::now();
    for _ in 0..RUNS {
        warm.reopen().await.expect("reopen");
    }
    let reopen = started.elapsed().as_secs_f64() * 1e6 / f64::from(RUNS);
    (instantiate, reopen)
}

fn resident_bytes() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0
}

async fn instance_kib(dummy: &Arc<Plugin>, monitor: &Monitor) -> f64 {
    let mut handles = Vec::with_capacity(DENSITY_INSTANCES);
    let before = resident_bytes();
    for i in 0..DENSITY_INSTANCES {
        let handle = monitor.open(dummy.clone(), ResourceSpec::new(&format!("d{i}"), dummy)).await.expect("open");
        handle.online(&context()).await.expect("online");
        handle.is_alive(CheckLevel::Normal).await.expect("probe");
        handles.push(handle);
    }
    let after = resident_bytes();
    black_box(&handles);
    (after - before) / DENSITY_INSTANCES as f64 / 1024.0
}

async fn hang_overrun_ms(runtime: &Arc<Runtime>, guests: &Path, monitor: &Monitor) -> f64 {
    let hostile = load(runtime, &guests.join("hostile.wasm")).await;
    let deadline = Duration::from_millis(100);
    let mut worst: f64 = 0.0;
    for i in 0..5 {
        let mut spec = ResourceSpec::new(&format!("hang{i}"), &hostile);
        spec.properties = vec![("fault".into(), "loop-looks-alive".into())];
        spec.timeouts.probe = deadline;
        let handle = monitor.open(hostile.clone(), spec).await.expect("open");
        let started = Instant::now();
        let _ = handle.looks_alive().await;
        worst = worst.max((started.elapsed().saturating_sub(deadline)).as_secs_f64() * 1e3);
    }
    worst
}
