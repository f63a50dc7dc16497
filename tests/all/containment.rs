//! Each hostile fixture runs beside a healthy `dummy` that is probed every
//! 10 ms throughout. For each: the host stays up, the hostile instance is
//! reported failed with the right reason, and the healthy one never misses
//! a probe.

use std::time::{Duration, Instant};

use steward_monitor::events::EventKind;
use steward_monitor::monitor::{CallError, FailureKind, Monitor, ResourceHandle};
use steward_tests::{HealthyProbe, ProbeRecord, context, plugin, process_running, spec};
use tokio::sync::broadcast::Receiver;

/// The deadline given to the hostile resource's calls in these tests.
const DEADLINE: Duration = Duration::from_millis(300);

/// How late a healthy probe may be before it counts as missed. Generous:
/// the machine has two cores and runs other tests at the same time.
const MISSED_PROBE_GAP: Duration = Duration::from_millis(750);

struct Scene {
    monitor: Monitor,
    events: Receiver<steward_monitor::events::MonitorEvent>,
    healthy: HealthyProbe,
    hostile: ResourceHandle,
}

/// Opens the healthy prober, then the hostile fixture with `fault`.
async fn scene(fault: &str, extra: &[(&str, &str)]) -> Scene {
    let monitor = Monitor::new("test-node");
    let events = monitor.subscribe();
    let healthy = HealthyProbe::start(&monitor).await;
    let hostile_plugin = plugin("hostile").await;
    let mut properties = vec![("fault", fault)];
    properties.extend_from_slice(extra);
    let mut hostile_spec = spec("hostile", &hostile_plugin, &properties);
    hostile_spec.timeouts.probe = DEADLINE;
    hostile_spec.timeouts.pending = DEADLINE;
    hostile_spec.memory_limit_bytes = 32 << 20;
    hostile_spec.grants.programs = vec!["/bin/sleep".into()];
    let hostile = monitor.open(hostile_plugin, hostile_spec).await.expect("hostile opens");
    Scene { monitor, events, healthy, hostile }
}

impl Scene {
    async fn healthy_was_unharmed(self) -> ProbeRecord {
        unharmed(&self.monitor, self.healthy).await
    }

    /// The failure event of the hostile resource, received after the call.
    fn failure_event(&mut self) -> CallError {
        while let Ok(event) = self.events.try_recv() {
            if let (EventKind::Failed { error }, "hostile") = (&event.kind, event.resource.as_str()) {
                return error.clone();
            }
        }
        panic!("no failure event was sent for the hostile resource");
    }
}

/// Stops the prober and asserts the healthy resource never missed a probe
/// and is still healthy, and that the monitor still opens new instances of
/// the hostile plugin; returns what the prober saw.
async fn unharmed(monitor: &Monitor, healthy: HealthyProbe) -> ProbeRecord {
    // Probe a little longer, so the failure's aftermath is covered too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let healthy_handle = healthy.handle.clone();
    let record = healthy.stop().await;
    assert!(record.missed.is_empty(), "healthy probes failed: {:?}", record.missed);
    assert!(record.healthy >= 5, "too few healthy probes ran: {record:?}");
    assert!(record.longest_gap < MISSED_PROBE_GAP, "a healthy probe was late: {record:?}");
    assert!(healthy_handle.looks_alive().await.expect("healthy still answers"));
    let hostile = plugin("hostile").await;
    let fresh = monitor.open(hostile.clone(), spec("fresh", &hostile, &[])).await.expect("fresh opens");
    fresh.online(&context()).await.expect("a fresh instance of the same plugin works");
    record
}

async fn assert_discarded(hostile: &ResourceHandle, kind: FailureKind) {
    assert!(!hostile.is_live().await, "the failed instance must be discarded");
    assert_eq!(hostile.last_failure().await.map(|f| f.kind()), Some(kind));
    let after = hostile.looks_alive().await.expect_err("a discarded instance is not called");
    assert_eq!(after.kind(), FailureKind::NoInstance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_in_online_fails_only_that_instance() {
    let mut scene = scene("trap-online", &[]).await;
    let error = scene.hostile.online(&context()).await.expect_err("online traps");
    assert_eq!(error.kind(), FailureKind::Trap, "{error}");
    assert!(error.to_string().contains("unreachable"), "{error}");
    assert_eq!(scene.failure_event().kind(), FailureKind::Trap);
    assert_discarded(&scene.hostile, FailureKind::Trap).await;
    scene.healthy_was_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_open_is_reported_with_its_message() {
    let monitor = Monitor::new("test-node");
    let healthy = HealthyProbe::start(&monitor).await;
    let hostile = plugin("hostile").await;
    let error = monitor
        .open(hostile.clone(), spec("hostile", &hostile, &[("fault", "panic-open")]))
        .await
        .expect_err("open panics");
    let message = error.to_string();
    assert!(
        matches!(&error, steward_monitor::Error::Call { source, .. } if source.kind() == FailureKind::Trap),
        "{message}"
    );
    assert!(message.contains("hostile fixture: panic in open"), "the panic message is quoted: {message}");
    unharmed(&monitor, healthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loop_is_stopped_at_its_deadline() {
    let mut scene = scene("loop-looks-alive", &[]).await;
    let started = Instant::now();
    let error = scene.hostile.looks_alive().await.expect_err("the loop is stopped");
    let took = started.elapsed();
    assert_eq!(error.kind(), FailureKind::Deadline, "{error}");
    assert!(took >= DEADLINE, "stopped before its deadline: {took:?}");
    assert!(took < DEADLINE + Duration::from_millis(50), "stopped {took:?} after the call began");
    assert_eq!(scene.failure_event().kind(), FailureKind::Deadline);
    assert_discarded(&scene.hostile, FailureKind::Deadline).await;
    scene.healthy_was_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_in_a_host_import_is_cut_at_the_deadline() {
    let scene = scene("sleep-looks-alive", &[]).await;
    let started = Instant::now();
    let error = scene.hostile.looks_alive().await.expect_err("the sleep is cut");
    assert_eq!(error.kind(), FailureKind::Deadline, "{error}");
    assert!(started.elapsed() < DEADLINE + Duration::from_millis(50), "cut after {:?}", started.elapsed());
    assert_discarded(&scene.hostile, FailureKind::Deadline).await;
    scene.healthy_was_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_its_cap() {
    let mut scene = scene("memory-bomb", &[]).await;
    let error = scene.hostile.online(&context()).await.expect_err("the bomb is stopped");
    assert_eq!(error.kind(), FailureKind::MemoryLimit, "{error}");
    assert!(error.to_string().contains("32 MiB"), "{error}");
    assert_eq!(scene.failure_event().kind(), FailureKind::MemoryLimit);
    assert_discarded(&scene.hostile, FailureKind::MemoryLimit).await;
    scene.healthy_was_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_is_a_stack_overflow_trap() {
    let scene = scene("recursion", &[]).await;
    let error = scene.hostile.online(&context()).await.expect_err("the recursion is stopped");
    assert_eq!(error.kind(), FailureKind::Trap, "{error}");
    assert!(error.to_string().contains("call stack exhausted"), "the reason names the stack: {error}");
    assert_discarded(&scene.hostile, FailureKind::Trap).await;
    scene.healthy_was_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_flood_is_rate_limited_and_stopped() {
    let mut scene = scene("log-flood", &[]).await;
    let error = scene.hostile.online(&context()).await.expect_err("the flood is stopped");
    assert_eq!(error.kind(), FailureKind::Deadline, "{error}");
    let mut dropped = 0;
    while let Ok(event) = scene.events.try_recv() {
        if let EventKind::LogsDropped { count } = event.kind {
            dropped += count;
        }
    }
    assert!(dropped > 1_000, "the flood's records are dropped and counted, not kept: {dropped}");
    assert_discarded(&scene.hostile, FailureKind::Deadline).await;
    scene.healthy_was_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_return_values_are_refused() {
    let scene = scene("huge-return", &[]).await;
    scene.hostile.online(&context()).await.expect("online works");
    let error = scene.hostile.control("anything", "").await.expect_err("16 MiB of output is refused");
    assert_eq!(error.kind(), FailureKind::OversizedReturn, "{error}");
    assert_discarded(&scene.hostile, FailureKind::OversizedReturn).await;
    scene.hostile.reopen().await.expect("the resource reopens in a fresh sandbox");
    scene.hostile.online(&context()).await.expect("online works again");
    let error = scene
        .hostile
        .is_alive(steward_monitor::bindings::CheckLevel::Normal)
        .await
        .expect_err("a 16 MiB reason is refused");
    assert_eq!(error.kind(), FailureKind::OversizedReturn, "{error}");
    scene.healthy_was_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_outside_the_grant_is_refused() {
    let granted = tempfile::tempdir().expect("tempdir");
    std::fs::write(granted.path().join("inside"), "granted").expect("write");
    let monitor = Monitor::new("test-node");
    let healthy = HealthyProbe::start(&monitor).await;
    let hostile = plugin("hostile").await;
    // Absolute host paths, and escapes from a granted directory.
    let paths = "/etc/passwd,/data/../../etc/passwd,/data/../inside,../etc/hostname";
    let mut hostile_spec = spec("hostile", &hostile, &[("fault", "read-outside"), ("paths", paths)]);
    hostile_spec.grants.directories = vec![steward_config::grants::DirectoryGrant {
        host_path: granted.path().join("sub-that-exists"),
        guest_path: "/data".into(),
        read_only: true,
    }];
    std::fs::create_dir(granted.path().join("sub-that-exists")).expect("mkdir");
    let handle = monitor.open(hostile, hostile_spec).await.expect("opens");
    let error = handle.online(&context()).await.expect_err("no read outside the grant succeeds");
    match &error {
        CallError::Plugin { error: steward_monitor::bindings::PluginError::Fatal(text), .. } => {
            assert!(text.contains("read outside grant refused"), "{text}");
            for path in paths.split(',') {
                assert!(text.contains(path), "every attempt was refused, {path} too: {text}");
            }
        }
        other => panic!("expected the plugin's fatal error, got {other}"),
    }
    assert!(handle.is_live().await, "a plugin error keeps the sandbox");
    unharmed(&monitor, healthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawning_outside_the_grant_is_a_denied_capability() {
    let mut scene = scene("spawn-outside", &[]).await;
    let error = scene.hostile.online(&context()).await.expect_err("the spawn is refused");
    assert_eq!(error.kind(), FailureKind::CapabilityDenied, "{error}");
    assert!(error.to_string().contains("/bin/sh"), "the reason names the program: {error}");
    let mut denied = false;
    while let Ok(event) = scene.events.try_recv() {
        denied |= matches!(event.kind, EventKind::CapabilityDenied { .. });
    }
    assert!(denied, "the denial is sent as an event");
    assert!(scene.hostile.tracked_processes().await.is_empty());
    scene.healthy_was_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalled_failure_is_reported_at_once() {
    let mut scene = scene("signal-failure", &[]).await;
    scene.hostile.online(&context()).await.expect("online works");
    let called = Instant::now();
    assert!(scene.hostile.looks_alive().await.expect("the probe returns"));
    let mut signalled = None;
    while let Ok(event) = scene.events.try_recv() {
        if let EventKind::SignalledFailure { reason } = event.kind {
            signalled = Some((reason, event.at));
        }
    }
    let (reason, at) = signalled.expect("the signalled failure is sent as an event");
    assert_eq!(reason, "hostile fixture: signalled failure");
    assert!(at >= called, "sent during the call, not at the next probe");
    scene.healthy_was_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapped_instance_leaves_no_orphan_process() {
    let scene = scene("spawn-then-trap", &[]).await;
    let mut spawned = scene.monitor.subscribe();
    let error = scene.hostile.online(&context()).await.expect_err("online traps");
    assert_eq!(error.kind(), FailureKind::Trap, "{error}");
    let mut pid = None;
    while let Ok(event) = spawned.try_recv() {
        if let EventKind::ProcessSpawned { pid: spawned_pid, .. } = event.kind {
            pid = Some(spawned_pid);
        }
    }
    let pid = pid.expect("the fixture spawned a process before trapping");
    assert!(!process_running(pid), "pid {pid} outlived its trapped instance");
    scene.healthy_was_unharmed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_argument_to_a_host_import_is_reported_reason_first() {
    let mut scene = scene("huge-argument", &[]).await;
    let error = scene.hostile.online(&context()).await.expect_err("the host refuses to read 1 GiB");
    assert_eq!(error.kind(), FailureKind::Trap, "{error}");
    let CallError::Trap { message, .. } = &error else { panic!("expected a trap, got {error}") };
    assert!(message.starts_with("string pointer/length out of bounds of memory"), "the reason comes first: {message}");
    assert!(!message.contains("wasm backtrace"), "the backtrace is not part of the reason: {message}");
    assert_eq!(scene.failure_event().kind(), FailureKind::Trap);
    assert_discarded(&scene.hostile, FailureKind::Trap).await;
    scene.healthy_was_unharmed().await;
}

/// A guest may not leave a symlink in its granted directory that points out
/// of it: the guest could not follow it, but an unsandboxed program could.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_leaving_the_grant_are_refused() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let granted = scratch.path().join("data");
    std::fs::create_dir_all(granted.join("sub")).expect("mkdir");
    std::fs::write(granted.join("file"), "inside").expect("write");
    std::fs::write(granted.join("sub/file"), "inside sub").expect("write");
    // What `escape-after-link` would reach, so that link would not dangle.
    std::fs::write(scratch.path().join("file"), "outside").expect("write");
    let monitor = Monitor::new("test-node");
    let healthy = HealthyProbe::start(&monitor).await;
    let hostile = plugin("hostile").await;
    let mut hostile_spec = spec("hostile", &hostile, &[("fault", "symlinks")]);
    hostile_spec.grants.directories = vec![steward_config::grants::DirectoryGrant {
        host_path: granted.clone(),
        guest_path: "/data".into(),
        read_only: false,
    }];
    let handle = monitor.open(hostile, hostile_spec).await.expect("opens");
    let mut events = monitor.subscribe();
    let report = handle.control("symlinks", "").await.expect("the attempts are reported");
    let (mut refused, mut created) = (0, 0);
    for line in report.lines() {
        let (attempt, outcome) = line.split_once(": ").unwrap_or_else(|| panic!("a report line: {line}"));
        let (link, target) = attempt.split_once(" -> ").unwrap_or_else(|| panic!("a report line: {line}"));
        let target = target.trim_end_matches(" (from sub)");
        let on_disk = granted.join(link);
        if link.contains("escape-") {
            assert!(outcome.starts_with("refused"), "{line}\n{report}");
            assert!(std::fs::symlink_metadata(&on_disk).is_err(), "{} exists: {line}", on_disk.display());
            refused += 1;
        } else {
            assert_eq!(outcome, "created", "{line}\n{report}");
            let made = std::fs::read_link(&on_disk).unwrap_or_else(|e| panic!("{}: {e}: {line}", on_disk.display()));
            assert_eq!(made, std::path::Path::new(target), "{line}");
            created += 1;
        }
    }
    assert_eq!((refused, created), (8, 4), "every attempt was reported:\n{report}");
    let mut denials = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::CapabilityDenied { detail } = event.kind {
            denials.push(detail);
        }
    }
    assert_eq!(denials.len(), refused, "each refusal is sent as a denied capability: {denials:#?}");
    let control = denials.iter().find(|detail| detail.contains("red")).expect("the refusal of escape-control");
    assert!(control.contains("\\u{1b}[31mred") && !control.contains('\u{1b}'), "escaped: {control}");
    assert!(handle.is_live().await, "a refused symlink is an error the guest handles, not a trap");
    unharmed(&monitor, healthy).await;
}
