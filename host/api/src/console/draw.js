// Pictures drawn as inline SVG through the DOM (no markup parsed, nothing
// fetched): a group's dependency graph in layers, and the small charts of
// a resource's last hour.

import { s, resourceHref } from './dom.js';

const NODE_WIDTH = 150;
const NODE_HEIGHT = 34;
const LAYER_GAP = 56;
const SIBLING_GAP = 14;
const LABEL_CHARS = 18;

/**
 * The dependency graph of one group's `resources` (each with `name`,
 * `state`, `depends_on`): a column per layer (a row when `vertical`, for a
 * narrow screen), the resources that depend on nothing in the group first;
 * an arrow from each resource to what it depends on. Each box links to the
 * resource's page.
 */
export function dependencyGraph(resources, { vertical = false } = {}) {
  const byName = new Map(resources.map((resource) => [resource.name, resource]));
  const layer = new Map();
  const depth = (name, seen) => {
    if (layer.has(name)) return layer.get(name);
    if (seen.has(name)) return 0; // a cycle: the configuration refuses them, so only a guard
    seen.add(name);
    const inside = (byName.get(name)?.depends_on ?? []).filter((dependency) => byName.has(dependency));
    const value = inside.length === 0 ? 0 : 1 + Math.max(...inside.map((dependency) => depth(dependency, seen)));
    layer.set(name, value);
    return value;
  };
  for (const resource of resources) depth(resource.name, new Set());
  const columns = [];
  for (const resource of resources) {
    const at = layer.get(resource.name) ?? 0;
    (columns[at] ??= []).push(resource);
  }
  const layers = Math.max(1, columns.length);
  const widest = Math.max(1, ...columns.map((column) => column?.length ?? 0));
  const across = vertical ? NODE_WIDTH + SIBLING_GAP : NODE_WIDTH + LAYER_GAP;
  const down = vertical ? NODE_HEIGHT + LAYER_GAP / 2 : NODE_HEIGHT + SIBLING_GAP;
  const width = (vertical ? widest * across - SIBLING_GAP : layers * across - LAYER_GAP) + 8;
  const height = (vertical ? layers * down - LAYER_GAP / 2 : widest * down - SIBLING_GAP) + 8;
  const place = new Map();
  columns.forEach((column, layerAt) => {
    (column ?? []).forEach((resource, siblingAt) => {
      const [x, y] = vertical ? [siblingAt, layerAt] : [layerAt, siblingAt];
      place.set(resource.name, { x: 4 + x * across, y: 4 + y * down });
    });
  });
  const marker = `arrow-${Math.random().toString(36).slice(2, 8)}`;
  const svg = s('svg', {
    class: 'graph', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
    'aria-label': 'dependency graph',
  });
  svg.append(s('defs', {}, s('marker', {
    id: marker, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
  }, s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow' }))));
  for (const resource of resources) {
    const from = place.get(resource.name);
    for (const dependency of resource.depends_on ?? []) {
      const to = place.get(dependency);
      if (!from || !to) continue;
      const ends = vertical
        ? { x1: from.x + NODE_WIDTH / 2, y1: from.y, x2: to.x + NODE_WIDTH / 2, y2: to.y + NODE_HEIGHT }
        : { x1: from.x, y1: from.y + NODE_HEIGHT / 2, x2: to.x + NODE_WIDTH, y2: to.y + NODE_HEIGHT / 2 };
      svg.append(s('line', { class: 'edge', ...ends, 'marker-end': `url(#${marker})` }));
    }
  }
  for (const resource of resources) {
    const at = place.get(resource.name);
    const label = resource.name.length > LABEL_CHARS ? `${resource.name.slice(0, LABEL_CHARS - 1)}…` : resource.name;
    svg.append(s('a', { href: resourceHref(resource.name), class: 'node', 'data-state': resource.state },
      s('title', {}, `${resource.name}: ${resource.state}`),
      s('rect', { x: at.x, y: at.y, width: NODE_WIDTH, height: NODE_HEIGHT, rx: 6 }),
      s('text', { x: at.x + 10, y: at.y + NODE_HEIGHT / 2 + 4 }, label),
      s('circle', { cx: at.x + NODE_WIDTH - 12, cy: at.y + NODE_HEIGHT / 2, r: 5, class: 'dot' })));
  }
  return svg;
}

const CHART_WIDTH = 320;
const CHART_HEIGHT = 120;
const PAD = { left: 54, right: 8, top: 10, bottom: 20 };

/**
 * A chart of `points` (`{t, v}`, `t` in Unix ms, `v` a number or null for
 * no value) over the hour before `now`: a line, or bars when `bars`.
 */
export function chart({ points, now, bars = false, unit = '', label }) {
  const from = now - 60 * 60 * 1000;
  const values = points.filter((point) => point.v !== null && point.v !== undefined);
  const top = niceCeiling(Math.max(0, ...values.map((point) => point.v)));
  const innerWidth = CHART_WIDTH - PAD.left - PAD.right;
  const innerHeight = CHART_HEIGHT - PAD.top - PAD.bottom;
  const x = (t) => PAD.left + Math.max(0, Math.min(1, (t - from) / (now - from))) * innerWidth;
  const y = (v) => PAD.top + innerHeight - (top === 0 ? 0 : (v / top) * innerHeight);
  const svg = s('svg', {
    class: `chart${bars ? ' bars' : ''}`, viewBox: `0 0 ${CHART_WIDTH} ${CHART_HEIGHT}`, role: 'img', 'aria-label': label,
  });
  svg.append(
    s('line', { class: 'axis', x1: PAD.left, y1: PAD.top + innerHeight, x2: PAD.left + innerWidth, y2: PAD.top + innerHeight }),
    s('line', { class: 'grid', x1: PAD.left, y1: PAD.top, x2: PAD.left + innerWidth, y2: PAD.top }),
    s('text', { class: 'tick', x: PAD.left - 4, y: PAD.top + 4, 'text-anchor': 'end' }, `${formatNumber(top)}${unit}`),
    s('text', { class: 'tick', x: PAD.left - 4, y: PAD.top + innerHeight, 'text-anchor': 'end' }, `0${unit}`),
    s('text', { class: 'tick', x: PAD.left, y: CHART_HEIGHT - 4 }, '−60 min'),
    s('text', { class: 'tick', x: PAD.left + innerWidth / 2, y: CHART_HEIGHT - 4, 'text-anchor': 'middle' }, '−30 min'),
    s('text', { class: 'tick', x: PAD.left + innerWidth, y: CHART_HEIGHT - 4, 'text-anchor': 'end' }, 'now'),
  );
  if (values.length === 0) {
    svg.append(s('text', { class: 'empty', x: PAD.left + innerWidth / 2, y: PAD.top + innerHeight / 2, 'text-anchor': 'middle' }, 'no data yet'));
    return svg;
  }
  if (bars) {
    const barWidth = Math.max(2, innerWidth / 60 - 1);
    for (const point of values) {
      const height = PAD.top + innerHeight - y(point.v);
      svg.append(s('rect', { class: 'bar', x: x(point.t) - barWidth, y: y(point.v), width: barWidth, height },
        s('title', {}, `${formatNumber(point.v)}${unit}`)));
    }
  } else {
    const line = values.map((point) => `${x(point.t).toFixed(1)},${y(point.v).toFixed(1)}`).join(' ');
    svg.append(s('polyline', { class: 'line', points: line }));
    for (const point of values) {
      svg.append(s('circle', { class: 'point', cx: x(point.t), cy: y(point.v), r: 2.5 },
        s('title', {}, `${formatNumber(point.v)}${unit}`)));
    }
  }
  return svg;
}

function niceCeiling(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

function formatNumber(value) {
  if (Number.isInteger(value)) return String(value);
  return value >= 10 ? value.toFixed(0) : value.toFixed(value >= 1 ? 1 : 2);
}
