// Building the page without ever parsing markup: every text the node sends
// (names, reasons, descriptions: untrusted, a plugin wrote some of them)
// becomes a text node, never HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An HTML element: `h('a', {href: '#/'}, 'text', child, ...)`. */
export function h(tag, attributes = {}, ...children) {
  return build(document.createElement(tag), attributes, children);
}

/** An SVG element, likewise. */
export function s(tag, attributes = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attributes, children);
}

/** Removes every child of `element`. */
export function clear(element) {
  while (element.firstChild) element.firstChild.remove();
  return element;
}

function build(element, attributes, children) {
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) {
      element.setAttribute(name, '');
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else if (child instanceof Node) element.append(child);
    else element.append(document.createTextNode(String(child)));
  }
}

/** A fragment link to a resource's page (names are percent-encoded). */
export function resourceHref(name) {
  return `#/resource/${encodeURIComponent(name)}`;
}

/** A time of day from Unix milliseconds. */
export function clock(unixMs) {
  return new Date(unixMs).toLocaleTimeString([], { hour12: false });
}
