//! What changes under a running node: plugin files appearing, changing and
//! leaving the plugin directory, an operator switching resources to a new
//! plugin version (`steward plugin upgrade`), and a configuration reload
//! that adds groups and resources (`steward reload`, SIGHUP).
//!
//! A new version never replaces an instance inside a call: a resource
//! switches when it next comes online, or on an upgrade, which re-creates
//! its instance between calls, keeping the processes it runs (they are
//! adopted by the new instance, then `online` is called again, which the
//! contract makes idempotent).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{NodeEvent, NodePhase, PluginView, blank_event, check_config, load_plugin};
use crate::plugin_dir::PluginFileChange;
use steward_cluster::shared_config::{Applied, SharedConfig, SharedConfigStore, SharedFile};
use steward_config::GroupChange;
use steward_monitor::monitor::CallError;
use steward_monitor::plugin::Plugin;
use steward_monitor::process::TrackedProcess;
use steward_monitor::worker::RemoteResource;
use steward_policy::{Input, ResourceState};

/// An operator's request that is not the policy engine's.
#[derive(Debug)]
pub enum NodeRequest {
    /// Switch the resources of a type to its newest loaded version now.
    Upgrade {
        /// The type.
        type_name: String,
        /// What happened, or why nothing could.
        reply: oneshot::Sender<Result<UpgradeReport, String>>,
    },
    /// Read the configuration again and add its new groups and resources.
    Reload {
        /// What was added, or why nothing was.
        reply: oneshot::Sender<Result<ReloadReport, String>>,
    },
    /// Check files of groups and resources against this node's plugins,
    /// as `steward validate` does, and make them the cluster's shared
    /// configuration (`steward apply`): every node then runs them.
    ApplyConfig {
        /// Each file's name (as the operator gave it) and text.
        files: Vec<(String, String)>,
        /// The revision written, or every reason nothing was.
        reply: oneshot::Sender<Result<ApplyReport, String>>,
    },
    /// Move a group this node owns to another node of the cluster: offline
    /// here in dependency order, then ownership handed over (the next
    /// owner gets a new fencing token), then online there.
    Move {
        /// The group.
        group: String,
        /// The node to move it to; `None`: the next by placement.
        to: Option<String>,
        /// What was started, or why nothing was.
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// What `steward plugin upgrade` did.
#[derive(Debug, Clone)]
pub struct UpgradeReport {
    /// The type.
    pub type_name: String,
    /// The version now current.
    pub version: String,
    /// Its sha256.
    pub hash: String,
    /// Online resources being switched now.
    pub switching: Vec<String>,
    /// Resources not online, which switch when they next come online.
    pub at_next_online: Vec<String>,
    /// Resources already on it.
    pub current: Vec<String>,
}

/// What `steward apply` wrote.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// The shared configuration's new revision.
    pub revision: i64,
    /// Its groups.
    pub groups: Vec<String>,
    /// How many resources it has.
    pub resources: usize,
}

/// Who hears how a reload went: the operator who asked, or nobody when a
/// new shared configuration arrived from etcd (the node publishes an event).
pub(super) enum ReloadReply {
    Operator(oneshot::Sender<Result<ReloadReport, String>>),
    Shared(Applied),
    /// The node's own, once changed groups are removed: it adds them
    /// again with their new definitions.
    Replacing,
}

/// What `steward reload` did.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// Groups added.
    pub added_groups: Vec<String>,
    /// Resources added.
    pub added_resources: Vec<String>,
    /// Groups no longer configured: taken offline here, then removed.
    pub removed_groups: Vec<String>,
    /// Groups defined differently now (their settings, members, or a
    /// member's properties, grants or timing): taken offline here,
    /// removed, then added again as they are now defined.
    pub replaced_groups: Vec<String>,
    /// Groups with other settings only (policy, autostart, owners,
    /// failback): they take them where they are, without going offline.
    pub retuned_groups: Vec<String>,
}

/// What the node's own tasks report back to its loop.
pub(super) enum Internal {
    /// A plugin file was loaded (or failed to).
    Loaded { file: PathBuf, plugin: Option<Arc<Plugin>>, view: PluginView },
    /// An upgrade's re-creation of an instance ended.
    Switched { resource: String, version: String, result: Result<(), CallError> },
    /// What a resource runs after a call the loop did not wait for.
    Running(Running),
    /// A call ended: what the resource runs now, recorded before `done` is
    /// applied, so whoever sees the resource online sees its processes.
    CallDone { running: Running, done: Input },
    /// A reload's additions were read and checked (or why not).
    ReloadChecked { plan: Result<ReloadPlan, String>, reply: ReloadReply },
    /// An operator applied a shared configuration (from the etcd watch).
    SharedChanged(Applied),
    /// Groups a reload replaces are removed and their instances closed in
    /// their workers: they can be added again under the same names.
    Replaceable,
    /// Resources a reload added are open in their workers: what each runs,
    /// and the inputs that then bring their groups online (or not).
    Opened { running: Vec<Running>, then: Vec<Input> },
    /// The configured resources are open (at start-up), and `then` starts
    /// their groups.
    Started { running: Vec<Running>, then: Vec<Input> },
}

/// What a resource runs after a call: its processes and plugin version,
/// which the loop records (it is the only writer of the store and the view).
pub(super) struct Running {
    resource: String,
    processes: Vec<TrackedProcess>,
    version: Option<String>,
}

/// What a reload reads and checks, away from the loop: a copy of what the
/// node knows, so the task borrows nothing of it.
struct ReloadPlanner {
    file: PathBuf,
    /// The shared configuration's files, which take the place of the node
    /// file's groups and resources.
    shared: Option<Vec<(String, String)>>,
    /// In a cluster, groups of a type this node lacks are left to others.
    in_cluster: bool,
    /// The groups and resources the node runs now.
    current: steward_config::NodeConfig,
    /// Of those, the groups being removed (or replaced) already: neither
    /// removed nor replaced again, nor added until they are gone.
    removing: std::collections::HashSet<String>,
    resources: std::collections::HashSet<String>,
    plugins: std::collections::BTreeMap<String, Arc<Plugin>>,
    store: Arc<crate::state::StateStore>,
}

/// A reload's checked additions.
pub(super) struct ReloadPlan {
    groups: Vec<steward_config::GroupConfig>,
    resources: Vec<steward_config::ResourceConfig>,
    /// What the store remembers of each, read here rather than in the loop
    /// (a thousand reads would hold it up).
    stored: HashMap<String, super::Stored>,
    /// Groups the configuration no longer has.
    removed: Vec<String>,
    /// Groups whose members it defines differently.
    replaced: Vec<String>,
    /// Groups with other settings only, as now defined.
    retuned: Vec<steward_config::GroupConfig>,
    /// Groups left to nodes that have a type this one lacks, with the type.
    lacking: Vec<(String, String)>,
}

impl ReloadPlanner {
    /// Reads the file again and checks the groups it adds and their
    /// resources, as `steward validate` would; every error at once.
    async fn plan(self) -> Result<ReloadPlan, String> {
        let mut fresh = steward_config::load(&self.file).map_err(|e| format!("{e}; nothing was changed"))?;
        if let Some(files) = &self.shared {
            fresh = fresh.with_shared(files).map_err(|e| format!("{e}; nothing was changed"))?;
        }
        let lacking = if self.in_cluster { super::set_aside_lacking(&mut fresh, &self.plugins) } else { Vec::new() };
        let known: std::collections::HashSet<&str> = self.current.groups.iter().map(|g| g.name.as_str()).collect();
        let groups: Vec<_> = fresh.groups.iter().filter(|g| !known.contains(g.name.as_str())).cloned().collect();
        let members: std::collections::HashSet<&str> =
            groups.iter().flat_map(|g| g.resources.iter().map(String::as_str)).collect();
        let resources: Vec<_> = fresh.resources.iter().filter(|r| members.contains(r.name.as_str())).cloned().collect();
        // Groups being removed are left alone: neither removed nor changed
        // again, they are added back (if still configured) once gone. A
        // group with other members is replaced: removed, then added as it
        // is now (its new members are checked here, before it goes
        // offline). A group with other settings only takes them in place.
        let mut removed = Vec::new();
        let mut replaced = Vec::new();
        let mut replaced_members = std::collections::HashSet::new();
        let mut replacements = Vec::new();
        let mut retuned = Vec::new();
        for (before, (name, change)) in self.current.groups.iter().zip(self.current.group_changes(&fresh)) {
            if self.removing.contains(name) {
                continue;
            }
            match change {
                None if !lacking.iter().any(|(set_aside, _)| set_aside == name) => removed.push(name.to_string()),
                None | Some((_, GroupChange::Same)) => {}
                Some((now, GroupChange::Members)) => {
                    replaced.push(name.to_string());
                    replaced_members.extend(before.resources.iter().map(String::as_str));
                    replacements.extend(now.resources.iter().filter_map(|member| fresh.resource(member)).cloned());
                }
                Some((now, GroupChange::Settings)) => retuned.push(now.clone()),
            }
        }
        let mut errors = Vec::new();
        for resource in &resources {
            if self.resources.contains(&resource.name) && !replaced_members.contains(resource.name.as_str()) {
                errors.push(format!(
                    "{}: resource `{}` already exists in a running group; give the new one another name",
                    resource.defined_at, resource.name
                ));
            }
        }
        let checked: Vec<_> = resources.iter().chain(&replacements).cloned().collect();
        let additions = steward_config::NodeConfig { resources: checked, groups: Vec::new(), ..fresh.clone() };
        errors.extend(check_config(&additions, &self.plugins).await.iter().map(ToString::to_string));
        if !errors.is_empty() {
            return Err(format!("{}; nothing was changed", errors.join("; ")));
        }
        let stored = super::read_stored(&self.store, &resources);
        Ok(ReloadPlan { groups, resources, stored, removed, replaced, retuned, lacking })
    }
}

impl ReloadReply {
    /// Tells the operator, or, for a shared configuration, publishes how
    /// it went and records what the node now runs.
    fn answer(self, view: &super::NodeView, outcome: Result<ReloadReport, String>) {
        match self {
            ReloadReply::Operator(reply) => {
                let _ = reply.send(outcome);
            }
            // Success is the `reloaded` event the loop publishes.
            ReloadReply::Replacing => {
                if let Err(error) = outcome {
                    tracing::error!(%error, "the replaced groups cannot be added again");
                    let reason = format!("adding the replaced groups again: {error}");
                    view.publish(NodeEvent { kind: "config-not-applied".into(), reason, ..blank_event() });
                }
            }
            ReloadReply::Shared(applied) => {
                let revision = applied.revision;
                let (kind, reason) = match outcome {
                    Ok(report) => {
                        if let Ok(mut current) = view.shared_config.write() {
                            *current = Some(applied);
                        }
                        let reason = format!(
                            "shared configuration revision {revision}: added groups [{}], resources [{}]; removing \
                             groups [{}]; replacing groups [{}]; retuned groups [{}]",
                            report.added_groups.join(", "),
                            report.added_resources.join(", "),
                            report.removed_groups.join(", "),
                            report.replaced_groups.join(", "),
                            report.retuned_groups.join(", ")
                        );
                        ("config-applied", reason)
                    }
                    Err(error) => {
                        tracing::error!(revision, %error, "the shared configuration does not fit this node");
                        ("config-not-applied", format!("shared configuration revision {revision}: {error}"))
                    }
                };
                view.publish(NodeEvent { kind: kind.into(), reason, ..blank_event() });
            }
        }
    }
}

impl Running {
    /// What `handle` runs now, asked of its worker by the task that made
    /// the call, so the loop never waits on the worker for it.
    pub(super) async fn asked(handle: &RemoteResource) -> Running {
        Running::answered(handle, handle.running_processes().await)
    }

    /// What `handle` runs, when its call's answer already said so.
    pub(super) fn answered(handle: &RemoteResource, processes: Vec<TrackedProcess>) -> Running {
        Running { resource: handle.name().to_string(), processes, version: handle.running_version() }
    }
}

impl super::Node {
    /// A plugin file is complete (load it in the background) or was removed.
    pub(super) fn on_plugin_file(&mut self, change: PluginFileChange) {
        match change {
            PluginFileChange::Ready(file) => {
                let (runtime, internal) = (self.runtime.clone(), self.internal_sender.clone());
                let versions = self.config.data_dir.join(super::PLUGIN_VERSIONS_DIR);
                tokio::spawn(async move {
                    let (plugin, view) = load_plugin(&runtime, &file, Some(&versions)).await;
                    let _ = internal.send(Internal::Loaded { file, plugin, view });
                });
            }
            PluginFileChange::Removed(file) => self.plugin_removed(file),
        }
    }

    pub(super) async fn on_internal(&mut self, message: Internal) {
        match message {
            Internal::Loaded { file, plugin, view } => self.plugin_loaded(file, plugin, view),
            Internal::Running(running) => self.record_running(running),
            Internal::ReloadChecked { plan, reply } => self.reload_checked(plan, reply),
            Internal::SharedChanged(applied) => self.shared_changed(applied),
            Internal::Replaceable => self.reload(ReloadReply::Replacing),
            Internal::Opened { running, then } => {
                for running in running {
                    self.record_running(running);
                }
                for input in then {
                    self.apply(input);
                }
            }
            Internal::Started { running, then } => {
                for running in running {
                    self.record_running(running);
                }
                self.view.set_phase(NodePhase::Running);
                tracing::info!(resources = self.handles.len(), plugins = self.plugins.len(), "resources opened");
                for input in then {
                    self.apply(input);
                }
            }
            Internal::CallDone { running, done } => {
                self.record_running(running);
                self.apply(done);
            }
            Internal::Switched { resource, version, result } => match result {
                Ok(()) => {
                    self.publish_about(&resource, "plugin-upgraded", format!("now runs version {version}"));
                    if self.engine.state(&resource) == Some(ResourceState::Online) {
                        self.start_probes(resource);
                    }
                }
                Err(error) => {
                    let failure = error.failure().context(&format!("switching to plugin version {version} failed"));
                    self.apply(Input::Failed { resource, failure });
                }
            },
        }
    }

    pub(super) async fn on_request(&mut self, request: NodeRequest) {
        match request {
            NodeRequest::Upgrade { type_name, reply } => {
                let _ = reply.send(self.upgrade(&type_name));
            }
            NodeRequest::Reload { reply } => self.reload(ReloadReply::Operator(reply)),
            NodeRequest::ApplyConfig { files, reply } => self.apply_config(files, reply),
            NodeRequest::Move { group, to, reply } => {
                let _ = reply.send(self.start_move(group, to));
            }
        }
    }

    fn plugin_loaded(&mut self, file: PathBuf, plugin: Option<Arc<Plugin>>, mut view: PluginView) {
        let shown = file.display().to_string();
        if let Ok(mut views) = self.view.plugins.write() {
            let previous = views.iter().position(|v| v.file == shown).map(|at| views.remove(at));
            if let (Some(previous), None) = (previous, &plugin) {
                // A bad replacement changes nothing else: the version that
                // was loaded from this file keeps serving, and says so.
                view.type_name = previous.type_name;
                view.version = previous.version;
                view.hash = previous.hash;
                view.metadata = previous.metadata;
            }
            views.push(view.clone());
            views.sort_by(|a, b| a.file.cmp(&b.file));
        }
        let Some(plugin) = plugin else {
            let error = view.error.unwrap_or_default();
            tracing::error!(file = %shown, %error, "plugin file rejected; nothing else changed");
            self.publish_node_event("plugin-rejected", error);
            return;
        };
        let type_name = plugin.type_name().to_string();
        if self.plugins.get(&type_name).is_some_and(|current| current.hash() == plugin.hash()) {
            return;
        }
        let users = self.resources_of_type(&type_name);
        for user in &users {
            if let Some(handle) = self.handles.get(user) {
                handle.set_plugin(plugin.clone());
            }
        }
        let version = &plugin.metadata().version;
        let reason = if users.is_empty() {
            format!("type `{type_name}` version {version} is available (from {shown})")
        } else {
            format!(
                "type `{type_name}` version {version} loaded from {shown}; {} resource(s) switch at their next online or on `steward plugin upgrade {type_name}`",
                users.len()
            )
        };
        tracing::info!(file = %shown, r#type = %type_name, %version, "{reason}");
        self.publish_node_event("plugin-loaded", reason);
        self.plugins.insert(type_name, plugin);
        self.ownership.plugins_changed(&self.inventory());
    }

    fn plugin_removed(&mut self, file: PathBuf) {
        let shown = file.display().to_string();
        if let Ok(mut views) = self.view.plugins.write() {
            views.retain(|v| v.file != shown);
        }
        let gone: Vec<String> =
            self.plugins.iter().filter(|(_, plugin)| plugin.path() == file).map(|(name, _)| name.clone()).collect();
        for type_name in gone {
            self.plugins.remove(&type_name);
            let mut running = self.resources_of_type(&type_name);
            running.retain(|r| self.engine.state(r) == Some(ResourceState::Online));
            let reason = format!(
                "{shown} was removed: type `{type_name}` is no longer available; {} online resource(s) keep running on it until they go offline{}",
                running.len(),
                if running.is_empty() { String::new() } else { format!(" ({})", running.join(", ")) }
            );
            tracing::warn!("{reason}");
            self.publish_node_event("plugin-removed", reason);
            self.ownership.plugins_changed(&self.inventory());
        }
    }

    fn upgrade(&mut self, type_name: &str) -> Result<UpgradeReport, String> {
        let Some(plugin) = self.plugins.get(type_name).cloned() else {
            let known: Vec<&str> = self.plugins.keys().map(String::as_str).collect();
            return Err(format!(
                "no plugin of type `{type_name}` is loaded (loaded: {}); `steward plugin list` shows the files",
                known.join(", ")
            ));
        };
        let mut report = UpgradeReport {
            type_name: type_name.to_string(),
            version: plugin.metadata().version.clone(),
            hash: plugin.hash().to_string(),
            switching: Vec::new(),
            at_next_online: Vec::new(),
            current: Vec::new(),
        };
        for resource in self.resources_of_type(type_name) {
            let Some(handle) = self.handles.get(&resource).cloned() else { continue };
            handle.set_plugin(plugin.clone());
            if handle.running_version().as_deref() == Some(plugin.hash()) {
                report.current.push(resource);
            } else if self.engine.state(&resource) == Some(ResourceState::Online) {
                // No probe may land between the old instance and the new.
                self.stop_probes(&resource);
                let internal = self.internal_sender.clone();
                let context = self.call_context(&resource);
                let version = report.version.clone();
                report.switching.push(resource.clone());
                tokio::spawn(async move {
                    let result = handle.switch_version(&context).await;
                    if result.is_ok() {
                        let _ = internal.send(Internal::Running(Running::asked(&handle).await));
                    }
                    let _ = internal.send(Internal::Switched { resource, version, result });
                });
            } else {
                report.at_next_online.push(resource);
            }
        }
        Ok(report)
    }

    /// Starts a reload: the file is read and its additions checked (their
    /// plugins' `validate` calls included) in a task of their own, so the
    /// loop goes on meanwhile; [`Internal::ReloadChecked`] brings them back.
    fn reload(&mut self, reply: ReloadReply) {
        let shared = match &reply {
            ReloadReply::Shared(applied) => Some(applied.config.named_texts()),
            ReloadReply::Operator(_) | ReloadReply::Replacing => self
                .view
                .shared_config
                .read()
                .ok()
                .and_then(|applied| applied.as_ref().map(|applied| applied.config.named_texts())),
        };
        let plan = ReloadPlanner {
            file: self.config.file.clone(),
            shared,
            in_cluster: self.config.cluster.is_some(),
            current: self.config.clone(),
            removing: self.removing.keys().cloned().collect(),
            resources: self.handles.keys().cloned().collect(),
            plugins: self.plugins.clone(),
            store: self.store.clone(),
        };
        let internal = self.internal_sender.clone();
        tokio::spawn(async move {
            let plan = plan.plan().await;
            let _ = internal.send(Internal::ReloadChecked { plan, reply });
        });
    }

    /// A checked reload: its groups and resources join the node at once;
    /// their instances open in the workers in a task, and the new groups
    /// are brought online (or not) once they are open.
    fn reload_checked(&mut self, plan: Result<ReloadPlan, String>, reply: ReloadReply) {
        let plan = match plan {
            Ok(plan) => plan,
            Err(error) => {
                reply.answer(&self.view, Err(error));
                return;
            }
        };
        // Another reload may have added the same names while this one was checked.
        let taken: Vec<&str> = plan
            .groups
            .iter()
            .map(|g| g.name.as_str())
            .filter(|g| self.group_positions.contains_key(*g))
            .chain(plan.resources.iter().map(|r| r.name.as_str()).filter(|r| self.handles.contains_key(*r)))
            .collect();
        if !taken.is_empty() && matches!(reply, ReloadReply::Replacing) {
            // Another reload added some of them first: plan again from
            // what the node has now.
            self.reload(ReloadReply::Replacing);
            return;
        }
        if !taken.is_empty() {
            let taken = taken.join(", ");
            reply.answer(&self.view, Err(format!("{taken} were added meanwhile; nothing was changed (reload again)")));
            return;
        }
        for (group, type_name) in &plan.lacking {
            self.lacks_type(group, type_name);
        }
        let report = ReloadReport {
            added_groups: plan.groups.iter().map(|g| g.name.clone()).collect(),
            added_resources: plan.resources.iter().map(|r| r.name.clone()).collect(),
            removed_groups: plan.removed.clone(),
            replaced_groups: plan.replaced.clone(),
            retuned_groups: plan.retuned.iter().map(|group| group.name.clone()).collect(),
        };
        for group in plan.retuned {
            self.retune(group);
        }
        for group in plan.removed {
            self.remove_group(group, super::Removal::Gone);
        }
        for group in plan.replaced {
            let wanted = match self.config.cluster {
                Some(_) => None,
                None => self.store.group_wanted(&group).ok().flatten(),
            };
            let autostart = self.group_config(&group).is_some_and(|g| g.autostart);
            self.remove_group(group, super::Removal::Replaced { wanted_online: wanted.unwrap_or(autostart) });
        }
        let then: Vec<Input> = plan
            .groups
            .iter()
            .map(|g| {
                let wanted = self.readding.remove(&g.name).unwrap_or(g.autostart);
                if wanted { Input::GroupOnline(g.name.clone()) } else { Input::GroupOffline(g.name.clone()) }
            })
            .collect();
        let opening = self.add(plan.resources, plan.groups, plan.stored);
        let internal = self.internal_sender.clone();
        tokio::spawn(async move {
            let running = super::open_all(opening).await;
            let _ = internal.send(Internal::Opened { running, then });
        });
        self.publish_node_event(
            "reloaded",
            format!(
                "added groups: [{}]; resources: [{}]; removing groups: [{}]; replacing groups: [{}]; retuned groups: [{}]",
                report.added_groups.join(", "),
                report.added_resources.join(", "),
                report.removed_groups.join(", "),
                report.replaced_groups.join(", "),
                report.retuned_groups.join(", ")
            ),
        );
        reply.answer(&self.view, Ok(report));
    }

    /// Follows the cluster's shared configuration: each apply after the
    /// one the node started with is reconciled like a reload.
    pub(super) fn follow_shared_config(&self, store: SharedConfigStore) {
        let internal = self.internal_sender.clone();
        tokio::spawn(async move {
            loop {
                match store.watch().await {
                    Ok(mut watch) => {
                        while let Some(applied) = watch.recv().await {
                            if internal.send(Internal::SharedChanged(applied)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot watch the shared configuration; trying again"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }

    /// A shared configuration arrived from etcd: one newer than what the
    /// node runs is reconciled (its new groups join; what a reload cannot
    /// change is reported).
    fn shared_changed(&mut self, applied: Applied) {
        let current = self.view.shared_config.read().ok().and_then(|view| view.as_ref().map(|a| a.revision));
        if current.is_some_and(|current| current >= applied.revision) {
            return;
        }
        tracing::info!(revision = applied.revision, by = %applied.config.applied_by, "a shared configuration was applied");
        self.reload(ReloadReply::Shared(applied));
    }

    /// `steward apply`: checks the files against this node's plugins in a
    /// task (the loop goes on), then writes them to etcd in one
    /// transaction, if nobody applied anything since they were checked.
    fn apply_config(&mut self, files: Vec<(String, String)>, reply: oneshot::Sender<Result<ApplyReport, String>>) {
        let Some(store) = self.shared_config.clone() else {
            let _ = reply.send(Err(format!(
                "this node runs alone: its groups and resources are in its node file {}; edit it and run `steward reload`",
                self.config.file.display()
            )));
            return;
        };
        let (node, plugins) = (self.config.clone(), self.plugins.clone());
        tokio::spawn(async move {
            let outcome = async {
                let current = store.read().await.map_err(|error| error.to_string())?;
                let candidate = node.with_shared(&files).map_err(|error| format!("{error}\nnothing was applied"))?;
                let errors = check_config(&candidate, &plugins).await;
                if !errors.is_empty() {
                    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    return Err(format!("{}\nnothing was applied", lines.join("\n")));
                }
                let config = SharedConfig {
                    files: files.into_iter().map(|(name, text)| SharedFile { name, text }).collect(),
                    applied_by: node.name.clone(),
                    applied_at_ms: super::unix_ms(),
                };
                // Groups the last apply had and these files leave out; a
                // last apply that no longer parses leaves its wishes be.
                let applied_before =
                    current.as_ref().and_then(|applied| node.with_shared(&applied.config.named_texts()).ok());
                let removed: Vec<String> = applied_before
                    .iter()
                    .flat_map(|before| before.groups.iter().map(|group| group.name.clone()))
                    .filter(|group| !candidate.groups.iter().any(|kept| kept.name == *group))
                    .collect();
                let revision = store
                    .apply(&config, current.as_ref().map(|applied| applied.revision), &removed)
                    .await
                    .map_err(|error| error.to_string())?;
                Ok(ApplyReport {
                    revision,
                    groups: candidate.groups.iter().map(|group| group.name.clone()).collect(),
                    resources: candidate.resources.len(),
                })
            }
            .await;
            let _ = reply.send(outcome);
        });
    }

    /// Records what a resource runs: its processes in the store (only when
    /// they changed: most resources run none, and each write is synced)
    /// and in the view, with its plugin version.
    pub(super) fn record_running(&mut self, running: Running) {
        let Running { resource, processes, version } = running;
        let resource = resource.as_str();
        let unchanged = self.store.processes(resource).is_ok_and(|recorded| recorded == processes);
        if !unchanged && let Err(error) = self.store.set_processes(resource, &processes) {
            tracing::error!(%resource, %error, "cannot record the resource's processes");
        }
        if let Some(entry) = self.view.resources.write().ok().as_mut().and_then(|r| r.get_mut(resource)) {
            entry.pids = processes.iter().map(|p| p.pid).collect();
            entry.plugin_hash = version.unwrap_or_default();
        }
    }

    /// The configured resources of type `type_name`.
    fn resources_of_type(&self, type_name: &str) -> Vec<String> {
        self.config.resources.iter().filter(|r| r.type_name == type_name).map(|r| r.name.clone()).collect()
    }

    fn publish_node_event(&self, kind: &str, reason: String) {
        self.view.publish(NodeEvent { kind: kind.into(), reason, ..blank_event() });
    }

    fn publish_about(&self, resource: &str, kind: &str, reason: String) {
        let group = self.group_name(resource);
        self.view.publish(NodeEvent {
            kind: kind.into(),
            resource: Some(resource.to_string()),
            group,
            reason,
            ..blank_event()
        });
    }
}
