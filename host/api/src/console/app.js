// Steward's web console: log in with a token, then the overview (nodes,
// groups with their dependency graphs, resources, the live event stream),
// a page per resource drawn from its plugin's metadata, and the plugins.
// Operate buttons appear only for a token whose role is `operate`, and each
// asks for confirmation in a dialog of the page.
//
// Everything shown comes from the node's JSON API and is untrusted text:
// it reaches the page only as text nodes and attribute values (dom.js).

import { ApiError, Unauthorized, follow, forgetToken, get, getOptional, part, post, setToken, token } from './api.js';
import { clear, clock, h, resourceHref } from './dom.js';
import { chart, dependencyGraph } from './draw.js';

/** Events kept on the page. */
const EVENTS_KEPT = 200;
/** How long after an event the counters (restarts, reasons, owners) are read again. */
const RESYNC_MS = 800;
/** How often an open resource page reads its history again. */
const HISTORY_REFRESH_MS = 30000;

const state = {
  identity: null,
  status: null,
  cluster: null,
  events: [],
  lastSeq: 0,
  stream: null,
  live: 'connecting',
  moveTo: new Map(),
  openDetails: new Set(),
  page: null,
  resyncTimer: null,
  pageTimer: null,
};

const main = document.getElementById('main');
/** A phone's width, where graphs grow downwards (the width of style.css's one-column layout). */
const narrow = window.matchMedia('(max-width: 760px)');

start();

function start() {
  document.getElementById('logout').addEventListener('click', () => signOut(''));
  window.addEventListener('hashchange', () => route());
  narrow.addEventListener('change', () => scheduleRender());
  if (token()) {
    signIn().catch(signInFailed);
  } else {
    showLogin('');
  }
}

// ---- signing in and out ----------------------------------------------------

async function signIn() {
  state.identity = await get('/v1/whoami');
  await resync({ events: true });
  showChrome(true);
  startStream();
  route();
}

function signOut(message) {
  forgetToken();
  stopStream();
  state.identity = null;
  state.status = null;
  showChrome(false);
  showLogin(message);
}

function showChrome(signedIn) {
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('logout').hidden = !signedIn;
  document.getElementById('live').hidden = !signedIn;
  const who = document.getElementById('who');
  who.hidden = !signedIn;
  clear(who);
  if (signedIn && state.identity) {
    who.append(h('span', { class: 'name' }, state.identity.name), ' ',
      h('span', { class: 'role', 'data-role': state.identity.role }, state.identity.role));
  }
}

function showLogin(message) {
  clearTimeout(state.pageTimer);
  const input = h('input', {
    id: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: 'paste an API token',
    'aria-label': 'API token',
  });
  const submit = () => {
    const value = input.value.trim();
    if (!value) return;
    setToken(value);
    signIn().catch(signInFailed);
  };
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') submit();
  });
  clear(main).append(h('section', { class: 'login card' },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'Paste an API token of this node. The console keeps it in this tab only, and sends it with every request.'),
    message ? h('p', { class: 'notice error', id: 'login-message' }, message) : null,
    h('div', { class: 'row' }, input, h('button', { id: 'sign-in', type: 'button', onclick: submit }, 'Sign in')),
    h('p', { class: 'hint' }, 'An operator creates one with ', h('code', {}, 'steward token create --role read'),
      ' (or ', h('code', {}, '--role operate'), ' to act).')));
  input.focus();
}

function signInFailed(error) {
  if (error instanceof Unauthorized) {
    signOut('The node refused this token (401). Paste a valid one.');
    return;
  }
  stopStream();
  state.identity = null;
  showChrome(false);
  showLogin(`Cannot sign in: ${error instanceof ApiError ? error.message : String(error)}`);
}

/** Every failure of a request ends here: a refused token signs out. */
function failed(error) {
  if (error instanceof Unauthorized) {
    signOut('The node refused this token (401). Paste a valid one.');
  } else {
    toast(error instanceof ApiError ? error.message : String(error), 'error');
  }
}

// ---- data: the status, then the event stream --------------------------------

/** Reads the status (and the cluster) again; with `events`, the event log too. */
async function resync({ events }) {
  const [status, cluster] = await Promise.all([get('/v1/status'), getOptional('/v1/cluster')]);
  state.status = status;
  state.cluster = cluster;
  const recent = status.recent_events ?? [];
  const newest = recent.length ? recent[recent.length - 1].seq : 0;
  if (events) {
    state.events = recent.slice(-EVENTS_KEPT).reverse();
    state.lastSeq = newest;
  } else {
    state.lastSeq = Math.max(state.lastSeq, newest);
  }
}

function startStream() {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  follow('/v1/events?history=true', {
    signal: controller.signal,
    onEvent: applyEvent,
    onState: (live) => {
      state.live = live;
      showLive();
      if (live === 'refused') signOut('The node refused this token (401). Paste a valid one.');
    },
    // After a break the node may have restarted: read everything again.
    onReconnect: async () => {
      await resync({ events: true });
      render();
    },
  });
}

function stopStream() {
  state.stream?.abort();
  state.stream = null;
}

function showLive() {
  const live = document.getElementById('live');
  live.dataset.state = state.live;
  live.textContent = { live: 'live', reconnecting: 'reconnecting…', connecting: 'connecting…', refused: 'refused' }[state.live] ?? state.live;
}

/**
 * One event from the stream: what it says is applied to the page at once
 * (a transition sets its resource's state, progress its progress, a
 * group's failure its state), and the event joins the log. The counters an
 * event implies (restarts, reasons, owners) are read again shortly after,
 * once for a burst of events.
 */
function applyEvent(event) {
  if (typeof event.seq !== 'number' || event.seq <= state.lastSeq) return;
  state.lastSeq = event.seq;
  state.events.unshift(event);
  state.events.length = Math.min(state.events.length, EVENTS_KEPT);
  const status = state.status;
  if (status) {
    const resource = status.resources.find((r) => r.name === event.resource);
    const group = status.groups.find((g) => g.name === event.group);
    if (event.kind === 'transition' && resource && event.to) {
      resource.state = event.to;
      resource.reason = event.reason;
      if (event.to === 'failed' && event.failure_kind) resource.last_failure_kind = event.failure_kind;
      if (!event.to.endsWith('-pending')) resource.progress = null;
      if (group && group.state !== 'failed') group.state = groupState(group, status.resources);
    } else if (event.kind === 'progress' && resource) {
      resource.progress = event.reason;
    } else if (event.kind === 'group-failed' && group) {
      group.state = 'failed';
      group.reason = event.reason;
    } else if (event.kind === 'group-recovered' && group) {
      group.state = groupState(group, status.resources);
      group.reason = '';
    }
  }
  scheduleRender();
  clearTimeout(state.resyncTimer);
  state.resyncTimer = setTimeout(() => {
    resync({ events: false }).then(() => {
      scheduleRender();
      if (state.page?.kind === 'resource') loadResourcePage(state.page.name, { quiet: true });
      if (state.page?.kind === 'plugins') loadPlugins();
    }).catch(failed);
  }, RESYNC_MS);
}

/** A group's state from its resources', as the node derives it. */
function groupState(group, resources) {
  const states = group.resources.map((name) => resources.find((r) => r.name === name)?.state ?? 'unknown');
  if (states.every((s) => s === 'online')) return 'online';
  if (states.every((s) => s === 'offline' || s === 'unknown')) return 'offline';
  if (states.some((s) => s.endsWith('-pending'))) return 'pending';
  return 'partial';
}

// ---- routing and rendering --------------------------------------------------

function route() {
  if (!state.identity) return;
  clearTimeout(state.pageTimer);
  const hash = location.hash.replace(/^#/, '');
  const resource = hash.match(/^\/resource\/(.+)$/);
  for (const link of document.querySelectorAll('[data-nav]')) link.classList.remove('current');
  if (resource) {
    let name;
    try {
      name = decodeURIComponent(resource[1]);
    } catch {
      name = resource[1];
    }
    state.page = { kind: 'resource', name, data: null };
    loadResourcePage(name, { quiet: false });
  } else if (hash === '/plugins') {
    document.querySelector('[data-nav="plugins"]')?.classList.add('current');
    state.page = { kind: 'plugins', data: null };
    loadPlugins();
  } else {
    document.querySelector('[data-nav="overview"]')?.classList.add('current');
    state.page = { kind: 'overview' };
  }
  render();
  window.scrollTo(0, 0);
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  if (!state.identity || !state.page) return;
  showLive();
  const view = state.page.kind === 'resource' ? resourcePage()
    : state.page.kind === 'plugins' ? pluginsPage()
    : overview();
  clear(main).append(view);
}

function canOperate() {
  return state.identity?.role === 'operate';
}

/**
 * Marks a table to show each row as a card of labelled fields on a phone
 * (style.css): each cell gets its column's heading as `data-label`, and
 * its content one wrapper, so the label and the content are two grid items.
 */
function stacked(table) {
  const headings = [...table.querySelectorAll('thead th')].map((heading) => heading.textContent);
  table.classList.add('stack');
  for (const row of table.querySelectorAll('tbody tr')) {
    [...row.children].forEach((cell, at) => {
      cell.dataset.label = headings[at] ?? '';
      const content = h('span', { class: 'cell' });
      content.append(...cell.childNodes);
      cell.append(content);
    });
  }
  return table;
}

/** A `<details>` whose open state survives the page being drawn again. */
function details(key, title, ...content) {
  const element = h('details', { class: key, open: state.openDetails.has(key) }, h('summary', {}, title), content);
  element.addEventListener('toggle', () => {
    if (element.open) state.openDetails.add(key);
    else state.openDetails.delete(key);
  });
  return element;
}

function stateBadge(value) {
  return h('span', { class: 'state', 'data-state': value }, value);
}

// ---- the overview -------------------------------------------------------------

function overview() {
  const status = state.status;
  if (!status) return h('p', {}, 'Loading…');
  const owners = new Map((state.cluster?.owners ?? []).map((owner) => [owner.group, owner]));
  return h('div', { class: 'overview' },
    nodesSection(status),
    h('section', { class: 'groups' },
      h('h2', {}, 'Groups'),
      status.groups.length === 0 ? h('p', { class: 'muted' }, 'This node has no groups.') : null,
      status.groups.map((group) => groupCard(group, status, owners.get(group.name)))),
    eventsSection());
}

function nodesSection(status) {
  const cluster = state.cluster;
  const title = h('h2', {}, 'Node ', h('span', { class: 'mono' }, status.node), ' ', stateBadge(status.phase));
  if (!cluster) {
    return h('section', { class: 'card node' }, title,
      h('p', { class: 'muted' }, 'This node runs alone (no cluster).'),
      workersTable(status.workers));
  }
  const owned = new Map();
  for (const owner of cluster.owners) {
    owned.set(owner.node, [...(owned.get(owner.node) ?? []), `${owner.group} (${owner.fencing_token})`]);
  }
  const lease = cluster.lease_remaining_ms == null ? cluster.lease : `${cluster.lease}, ${cluster.lease_remaining_ms} ms left`;
  return h('section', { class: 'card node' }, title,
    h('p', {}, 'Cluster ', h('strong', {}, cluster.name), ` — seen from ${cluster.node}: lease ${lease}`),
    h('div', { class: 'scroll' }, stacked(h('table', { id: 'nodes' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Node'), h('th', {}, 'API'), h('th', {}, 'Version'), h('th', {}, 'Groups (token)'))),
      h('tbody', {}, cluster.nodes.map((node) => h('tr', { 'data-node': node.name },
        h('td', { class: 'mono' }, node.name), h('td', { class: 'mono' }, node.api), h('td', {}, node.version),
        h('td', {}, (owned.get(node.name) ?? []).join(', ')))))))),
    workersTable(status.workers));
}

function workersTable(workers) {
  if (!workers?.length) return null;
  return details('workers', `Monitor workers (${workers.length})`,
    h('div', { class: 'scroll' }, stacked(h('table', {},
      h('thead', {}, h('tr', {}, h('th', {}, 'Worker'), h('th', {}, 'PID'), h('th', {}, 'Restarts'), h('th', {}, 'Resources'))),
      h('tbody', {}, workers.map((worker) => h('tr', {},
        h('td', { class: 'mono' }, worker.name), h('td', { class: 'num' }, worker.pid), h('td', { class: 'num' }, worker.restarts),
        h('td', {}, worker.resources.length))))))));
}

function groupCard(group, status, owner) {
  const resources = group.resources.map((name) => status.resources.find((r) => r.name === name)).filter(Boolean);
  const ownerText = owner ? `owner ${owner.node} (token ${owner.fencing_token})`
    : state.cluster ? 'no owner' : group.fencing_token != null ? `on this node (token ${group.fencing_token})` : 'on this node';
  return h('article', { class: 'card group', 'data-group': group.name },
    h('header', {},
      h('h3', {}, group.name), stateBadge(group.state),
      h('span', { class: 'muted owner' }, ownerText),
      group.wanted_online ? null : h('span', { class: 'muted' }, 'wanted offline')),
    group.reason ? h('p', { class: 'reason' }, group.reason) : null,
    canOperate() ? groupActions(group) : null,
    h('div', { class: 'graph-box' }, dependencyGraph(resources, { vertical: narrow.matches })),
    h('div', { class: 'scroll' }, resourcesTable(resources)));
}

function groupActions(group) {
  const name = group.name;
  const buttons = [
    actionButton('Online', 'online', `Bring group ${name} online?`, () => post(`/v1/groups/${part(name)}/online`)),
    actionButton('Offline', 'offline', `Take group ${name} offline? Its resources stop in reverse dependency order.`,
      () => post(`/v1/groups/${part(name)}/offline`)),
  ];
  if (state.cluster) {
    const others = state.cluster.nodes.map((node) => node.name).filter((node) => node !== state.cluster.node);
    const select = h('select', { 'aria-label': `move ${name} to`, 'data-move-to': name },
      h('option', { value: '' }, 'placement decides'),
      others.map((node) => h('option', { value: node }, node)));
    select.value = state.moveTo.get(name) ?? '';
    select.addEventListener('change', () => state.moveTo.set(name, select.value));
    buttons.push(h('span', { class: 'move' }, select, actionButton('Move', 'move', () => {
      const to = state.moveTo.get(name);
      return `Move group ${name} to ${to || 'the node placement chooses'}? It goes offline here first.`;
    }, () => {
      const to = state.moveTo.get(name);
      return post(`/v1/groups/${part(name)}/move${to ? `?to=${part(to)}` : ''}`);
    })));
  }
  return h('div', { class: 'actions' }, buttons);
}

function resourcesTable(resources) {
  return stacked(h('table', { class: 'resources' },
    h('thead', {}, h('tr', {},
      h('th', {}, 'Resource'), h('th', {}, 'Type'), h('th', {}, 'State'), h('th', {}, 'Restarts'),
      h('th', {}, 'Last failure'), h('th', {}, 'Progress / reason'))),
    h('tbody', {}, resources.map((resource) => h('tr', { 'data-resource': resource.name },
      h('td', {}, h('a', { href: resourceHref(resource.name) }, resource.name)),
      h('td', { class: 'mono' }, resource.type),
      h('td', {}, stateBadge(resource.state)),
      h('td', { class: 'num', title: 'in the restart period / in all' }, `${resource.restarts_in_period} / ${resource.restarts_total}`),
      h('td', {}, resource.last_failure_kind ? h('span', { class: 'failure' }, resource.last_failure_kind) : '—'),
      h('td', { class: 'reason' }, resource.progress ? h('span', { class: 'progress' }, resource.progress) : resource.reason))))));
}

function eventsSection() {
  return h('section', { class: 'card events' },
    h('h2', {}, 'Events'),
    h('ol', { id: 'events' }, state.events.map((event) => h('li', { 'data-kind': event.kind, 'data-seq': event.seq },
      h('time', {}, clock(event.unix_ms)), ' ',
      h('span', { class: 'kind' }, event.kind), ' ',
      h('span', { class: 'subject' }, event.resource ?? event.group), ' ',
      event.from && event.to ? h('span', { class: 'change' }, `${event.from} → ${event.to}`) : null, ' ',
      event.failure_kind ? h('span', { class: 'failure' }, event.failure_kind) : null, ' ',
      h('span', { class: 'reason' }, event.reason)))));
}

// ---- a resource's page ------------------------------------------------------

async function loadResourcePage(name, { quiet }) {
  try {
    const resource = await getOptional(`/v1/resources/${part(name)}`);
    if (!resource) {
      if (state.page?.kind === 'resource' && state.page.name === name) {
        state.page.data = { missing: true };
        render();
      }
      return;
    }
    const [plugin, history] = await Promise.all([
      getOptional(`/v1/plugins/${part(resource.type)}`),
      getOptional(`/v1/resources/${part(name)}/history`),
    ]);
    if (state.page?.kind !== 'resource' || state.page.name !== name) return;
    state.page.data = { resource, plugin, history, at: Date.now() };
    render();
    clearTimeout(state.pageTimer);
    state.pageTimer = setTimeout(() => loadResourcePage(name, { quiet: true }), HISTORY_REFRESH_MS);
  } catch (error) {
    if (!quiet || error instanceof Unauthorized) failed(error);
  }
}

function resourcePage() {
  const { name, data } = state.page;
  if (!data) return h('p', {}, 'Loading ', name, '…');
  if (data.missing) return h('p', { class: 'notice error' }, `This node has no resource named ${name}.`);
  const { resource, plugin, history } = data;
  // The live state from the stream is newer than the page's last read.
  const live = state.status?.resources.find((r) => r.name === name);
  const current = live ? { ...resource, ...pick(live, ['state', 'reason', 'progress', 'last_failure_kind']) } : resource;
  return h('div', { class: 'resource-page', 'data-resource-page': name },
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' / ', current.group, ' / '),
    h('h1', {}, current.name, ' ', stateBadge(current.state)),
    canOperate() ? h('div', { class: 'actions' },
      actionButton('Online', 'online', `Bring resource ${name} online (and what it depends on)?`,
        () => post(`/v1/resources/${part(name)}/online`)),
      actionButton('Offline', 'offline', `Take resource ${name} offline (and what depends on it)?`,
        () => post(`/v1/resources/${part(name)}/offline`)),
      actionButton(`Upgrade ${current.type}`, 'upgrade', `Switch every online resource of type ${current.type} to its newest plugin file now?`,
        () => post(`/v1/plugins/${part(current.type)}/upgrade`))) : null,
    propertyPage(current, plugin),
    h('div', { class: 'columns' },
      h('section', { class: 'card summary' }, h('h2', {}, 'State'), summary(current)),
      h('section', { class: 'card charts' }, h('h2', {}, 'The last hour'), charts(history))));
}

function pick(object, keys) {
  return Object.fromEntries(keys.map((key) => [key, object[key]]));
}

function summary(resource) {
  const rows = [
    ['Type', h('a', { href: '#/plugins', class: 'mono' }, resource.type)],
    ['Group', resource.group],
    ['Reason', resource.reason || '—'],
    ['Progress', resource.progress || '—'],
    ['Restarts', `${resource.restarts_in_period} in the period, ${resource.restarts_total} in all`],
    ['Failures', String(resource.failures_total)],
    ['Last failure', resource.last_failure_kind ? h('span', { class: 'failure' }, resource.last_failure_kind) : '—'],
    ['Depends on', resource.depends_on.length ? resource.depends_on.map((dependency, at) => [at ? ', ' : '',
      h('a', { href: resourceHref(dependency) }, dependency)]) : '—'],
    ['Processes', resource.pids.length ? resource.pids.join(', ') : '—'],
    ['Worker', resource.worker || '—'],
    ['Plugin version', resource.plugin_hash ? h('span', { class: 'mono', title: resource.plugin_hash }, resource.plugin_hash.slice(0, 12)) : '—'],
  ];
  return h('dl', { class: 'facts' }, rows.map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
}

function charts(history) {
  if (!history) return h('p', { class: 'muted' }, 'No history for this resource.');
  const samples = [...history.samples, history.current];
  const now = history.current.unix_ms;
  const latency = samples.map((sample) => ({ t: sample.unix_ms, v: sample.mean_probe_ms ?? null }));
  const restarts = samples.map((sample) => ({ t: sample.unix_ms, v: sample.restarts }));
  const probes = samples.reduce((sum, sample) => sum + sample.probes, 0);
  return [
    h('figure', { class: 'chart-box', id: 'latency-chart' },
      chart({ points: latency, now, unit: ' ms', label: 'mean probe latency per minute' }),
      h('figcaption', {}, `Probe latency, mean per minute (${probes} probes)`)),
    h('figure', { class: 'chart-box', id: 'restarts-chart' },
      chart({ points: restarts, now, bars: true, label: 'restarts per minute' }),
      h('figcaption', {}, `Restarts per minute (${history.current.restarts_total} in all)`)),
  ];
}

/**
 * The resource's properties drawn from its type's metadata, as the classic
 * administrator's extension pages did: each property the type accepts,
 * with its kind, whether it is required, the value configured or the
 * default that applies, and the type's own description of it.
 */
function propertyPage(resource, plugin) {
  const configured = resource.properties ?? {};
  if (!plugin) {
    return h('section', { class: 'card properties' }, h('h2', {}, 'Properties'),
      h('p', { class: 'muted' }, `Type ${resource.type} is not loaded on this node, so its metadata is unknown.`),
      plainProperties(configured));
  }
  const known = new Set(plugin.properties.map((spec) => spec.name));
  const unknown = Object.keys(configured).filter((key) => !known.has(key));
  return h('section', { class: 'card properties', id: 'properties' },
    h('h2', {}, 'Properties'),
    h('p', { class: 'type-line' }, h('strong', { class: 'mono' }, plugin.type), ` ${plugin.version} — `, plugin.description),
    h('div', { class: 'property-sheet' }, plugin.properties.map((spec) => {
      const set = Object.hasOwn(configured, spec.name);
      const value = set ? configured[spec.name] : spec.default ?? '';
      return h('div', { class: 'property', 'data-property': spec.name },
        h('label', { for: `prop-${spec.name}` }, h('span', { class: 'mono' }, spec.name),
          spec.required ? h('span', { class: 'required', title: 'required' }, ' required') : null),
        h('input', { id: `prop-${spec.name}`, type: 'text', readonly: true, value, title: value,
          class: set ? 'set' : 'default', placeholder: set || spec.default != null ? null : 'not set' }),
        h('p', { class: 'meta' }, h('span', { class: 'kind' }, spec.kind), ' · ',
          set && spec.default == null ? 'set' : null,
          set && spec.default != null ? `default ${shownDefault(spec.default)}` : null,
          !set && spec.default != null ? `the default${spec.default === '' ? ' (empty)' : ''}` : null,
          !set && spec.default == null ? 'not set' : null),
        h('p', { class: 'description' }, spec.description));
    })),
    unknown.length ? [h('h3', {}, 'Set but not in the type\u2019s metadata'), plainProperties(pick(configured, unknown))] : null,
    details('type-details', 'Capabilities and timing',
      h('dl', { class: 'facts' },
        h('dt', {}, 'Capabilities'), h('dd', {}, plugin.capabilities.join(', ') || 'none'),
        h('dt', {}, 'Looks-alive every'), h('dd', {}, ms(plugin.timing.looks_alive_interval_ms)),
        h('dt', {}, 'Is-alive every'), h('dd', {}, ms(plugin.timing.is_alive_interval_ms)),
        h('dt', {}, 'Online/offline within'), h('dd', {}, ms(plugin.timing.pending_timeout_ms)),
        h('dt', {}, 'Probe within'), h('dd', {}, ms(plugin.timing.probe_timeout_ms)),
        h('dt', {}, 'File'), h('dd', { class: 'mono' }, plugin.file))));
}

function shownDefault(value) {
  return value === '' ? '(empty)' : value;
}

function plainProperties(values) {
  const entries = Object.entries(values);
  if (!entries.length) return h('p', { class: 'muted' }, 'No properties set.');
  return h('dl', { class: 'facts' }, entries.map(([key, value]) => [h('dt', { class: 'mono' }, key), h('dd', {}, value)]));
}

function ms(value) {
  return value ? `${value} ms` : 'the host\u2019s default';
}

// ---- plugins -------------------------------------------------------------------

async function loadPlugins() {
  try {
    const plugins = await get('/v1/plugins');
    if (state.page?.kind !== 'plugins') return;
    state.page.data = plugins;
    render();
  } catch (error) {
    failed(error);
  }
}

function pluginsPage() {
  const plugins = state.page.data;
  if (!plugins) return h('p', {}, 'Loading plugins…');
  return h('section', { class: 'card plugins' },
    h('h1', {}, 'Plugins'),
    h('p', { class: 'muted' }, 'Every file of the plugin directory: the type it holds, or why it was rejected.'),
    h('div', { class: 'scroll' }, stacked(h('table', { id: 'plugins' },
      h('thead', {}, h('tr', {}, h('th', {}, 'File'), h('th', {}, 'Type'), h('th', {}, 'Version'), h('th', {}, 'SHA-256'),
        h('th', {}, 'Status'), canOperate() ? h('th', {}, '') : null)),
      h('tbody', {}, plugins.map((plugin) => h('tr', { class: plugin.error ? 'rejected' : 'loaded', 'data-file': plugin.file },
        h('td', { class: 'mono' }, plugin.file.split('/').pop()),
        h('td', { class: 'mono' }, plugin.type ?? '—'),
        h('td', {}, plugin.version ?? '—'),
        h('td', { class: 'mono', title: plugin.hash ?? '' }, plugin.hash ? plugin.hash.slice(0, 12) : '—'),
        h('td', {}, plugin.error ? h('span', { class: 'failure' }, plugin.error) : 'loaded'),
        canOperate() ? h('td', {}, plugin.type ? actionButton('Upgrade', 'upgrade',
          `Switch every online resource of type ${plugin.type} to its newest plugin file now?`,
          () => post(`/v1/plugins/${part(plugin.type)}/upgrade`)) : null) : null)))))));
}

// ---- actions, confirmation, messages ----------------------------------------

/**
 * A button that asks for confirmation in the page's dialog, then acts and
 * reports the node's answer. Shown only to an `operate` token (the node
 * refuses the others anyway).
 */
function actionButton(label, action, question, perform) {
  return h('button', {
    type: 'button', class: `op ${action}`, 'data-action': action,
    onclick: async () => {
      const text = typeof question === 'function' ? question() : question;
      if (!(await confirmAction(text))) return;
      try {
        const answer = await perform();
        toast(describeAnswer(answer), 'ok');
        if (state.page?.kind === 'plugins') loadPlugins();
      } catch (error) {
        failed(error);
      }
    },
  }, label);
}

function describeAnswer(answer) {
  if (!answer) return 'done';
  if (answer.accepted) return `accepted: ${answer.accepted}`;
  if (answer.type && answer.version) {
    return `type ${answer.type} is at ${answer.version}: switching ${answer.switching.length}, `
      + `${answer.at_next_online.length} at their next online, ${answer.current.length} already current`;
  }
  return 'done';
}

function confirmAction(text) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise((resolve) => {
    const ok = document.getElementById('confirm-ok');
    const cancel = document.getElementById('confirm-cancel');
    const finish = (answer) => {
      ok.removeEventListener('click', yes);
      cancel.removeEventListener('click', no);
      dialog.removeEventListener('cancel', no);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const yes = () => finish(true);
    const no = () => finish(false);
    ok.addEventListener('click', yes);
    cancel.addEventListener('click', no);
    dialog.addEventListener('cancel', no);
    dialog.showModal();
    cancel.focus();
  });
}

let toastTimer = null;
function toast(text, kind) {
  const element = document.getElementById('toast');
  element.textContent = text;
  element.dataset.kind = kind;
  element.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    element.hidden = true;
  }, 6000);
}
