//! The node's view turned into the API's documents ([`crate::wire`]): the
//! one place that knows both, so neither the node nor the monitor decides
//! a JSON shape.

use steward_monitor::worker::WorkerView;
use steward_node::cluster::ClusterView;
use steward_node::{GroupView, NodeEvent, NodePhase, NodeView, PluginView, ReloadReport, ResourceView, UpgradeReport};

use crate::wire;

pub fn phase(phase: NodePhase) -> String {
    match phase {
        NodePhase::LoadingPlugins => "loading-plugins",
        NodePhase::Running => "running",
        NodePhase::Stopping => "stopping",
    }
    .to_string()
}

pub fn resource(view: &ResourceView) -> wire::Resource {
    wire::Resource {
        name: view.name.clone(),
        type_name: view.type_name.clone(),
        group: view.group.clone(),
        state: view.state.as_str().to_string(),
        reason: view.reason.clone(),
        last_failure_kind: view.last_failure_kind.map(|kind| kind.as_str().to_string()),
        progress: view.progress.clone(),
        depends_on: view.depends_on.clone(),
        restarts_in_period: view.restarts_in_period,
        restarts_total: view.restarts_total,
        failures_total: view.failures_total,
        pids: view.pids.clone(),
        worker: view.worker.clone(),
        plugin_hash: view.plugin_hash.clone(),
        properties: view.properties.iter().cloned().collect(),
    }
}

pub fn group(view: &GroupView) -> wire::Group {
    wire::Group {
        name: view.name.clone(),
        state: view.state.clone(),
        reason: view.reason.clone(),
        wanted_online: view.wanted_online,
        fencing_token: view.fencing_token,
        resources: view.resources.clone(),
    }
}

pub fn plugin(view: &PluginView) -> wire::Plugin {
    wire::Plugin {
        file: view.file.clone(),
        type_name: view.type_name.clone(),
        version: view.version.clone(),
        hash: view.hash.clone(),
        error: view.error.clone(),
    }
}

pub fn worker(view: WorkerView) -> wire::Worker {
    wire::Worker {
        name: view.name,
        pid: view.pid,
        restarts: view.restarts,
        resources: view.resources,
        round_trips: view.round_trips,
    }
}

pub fn event(event: &NodeEvent) -> wire::Event {
    wire::Event {
        seq: event.seq,
        unix_ms: event.unix_ms,
        uptime_us: event.uptime_us,
        kind: event.kind.clone(),
        resource: event.resource.clone(),
        group: event.group.clone(),
        from: event.from.map(|state| state.as_str().to_string()),
        to: event.to.map(|state| state.as_str().to_string()),
        failure_kind: event.failure_kind.map(|kind| kind.as_str().to_string()),
        reason: event.reason.clone(),
        by: event.by.clone(),
    }
}

pub fn upgrade(report: UpgradeReport) -> wire::UpgradeReport {
    wire::UpgradeReport {
        type_name: report.type_name,
        version: report.version,
        hash: report.hash,
        switching: report.switching,
        at_next_online: report.at_next_online,
        current: report.current,
    }
}

pub fn reload(report: ReloadReport) -> wire::ReloadReport {
    wire::ReloadReport {
        added_groups: report.added_groups,
        added_resources: report.added_resources,
        removed_groups: report.removed_groups,
        replaced_groups: report.replaced_groups,
        retuned_groups: report.retuned_groups,
    }
}

pub fn decision(decision: steward_node::why::Decision) -> wire::Decision {
    let steward_node::why::Decision { unix_ms, node, group, kind, rule, inputs, outcome } = decision;
    wire::Decision { unix_ms, node, group, kind, rule, inputs, outcome }
}

pub fn shared_config(view: &NodeView) -> wire::Config {
    let applied = view.shared_config.read().ok().and_then(|applied| applied.clone());
    let node_file = view.node_file.display().to_string();
    match applied {
        Some(applied) => wire::Config {
            source: "shared".into(),
            node_file,
            revision: Some(applied.revision),
            applied_by: Some(applied.config.applied_by),
            applied_at_ms: Some(applied.config.applied_at_ms),
            files: applied
                .config
                .files
                .into_iter()
                .map(|file| wire::ConfigFile { name: file.name, text: file.text })
                .collect(),
        },
        None => wire::Config {
            source: "node-file".into(),
            node_file,
            revision: None,
            applied_by: None,
            applied_at_ms: None,
            files: Vec::new(),
        },
    }
}

pub fn cluster(view: &ClusterView) -> wire::Cluster {
    let figures = view.gauge.read();
    wire::Cluster {
        name: view.name.clone(),
        node: view.node.clone(),
        lease: view.health.read().map_or("unknown", |health| *health).to_string(),
        lease_remaining_ms: figures.map(|f| f.remaining.as_millis() as u64),
        keepalive_round_trip_ms: figures.map(|f| (f.round_trip.as_secs_f64() * 1e4).round() / 10.0),
        nodes: view
            .nodes
            .read()
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|node| wire::ClusterNode {
                        name: node.name.clone(),
                        api: node.api_address.clone(),
                        version: node.version.clone(),
                        plugins: node.plugins.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        owners: view
            .owners
            .read()
            .map(|owners| {
                owners
                    .iter()
                    .map(|(group, owner)| wire::GroupOwner {
                        group: group.clone(),
                        node: owner.node.clone(),
                        fencing_token: owner.fencing_token,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A loaded type's metadata, when `view` is a file that loaded.
pub fn plugin_type(view: &PluginView) -> Option<wire::PluginType> {
    let info = view.metadata.as_ref()?;
    let capabilities = info.capabilities.iter().map(|capability| capability.as_str().to_string()).collect();
    let properties = info
        .properties
        .iter()
        .map(|spec| wire::PropertySpec {
            name: spec.name.clone(),
            kind: spec.kind.as_str().to_string(),
            required: spec.required,
            default: spec.default_value.clone(),
            description: spec.description.clone(),
        })
        .collect();
    Some(wire::PluginType {
        type_name: info.name.clone(),
        version: info.version.clone(),
        description: info.description.clone(),
        file: view.file.clone(),
        hash: view.hash.clone().unwrap_or_default(),
        capabilities,
        timing: wire::PluginTiming {
            looks_alive_interval_ms: info.timing.looks_alive_interval_ms,
            is_alive_interval_ms: info.timing.is_alive_interval_ms,
            pending_timeout_ms: info.timing.pending_timeout_ms,
            probe_timeout_ms: info.timing.probe_timeout_ms,
        },
        properties,
    })
}
