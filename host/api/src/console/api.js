// The console's client of the node's JSON API: every call carries the
// operator's token as a bearer token. The token lives in sessionStorage, so
// it goes with the tab and is never written to disk by the console.

const TOKEN_KEY = 'steward-token';

/** The node refused the token (401): the console goes back to its login. */
export class Unauthorized extends Error {}

/** Any other refusal, with the node's own message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function headers() {
  return { Authorization: `Bearer ${token() ?? ''}`, Accept: 'application/json' };
}

async function call(method, path) {
  let response;
  try {
    response = await fetch(path, { method, headers: headers(), cache: 'no-store', credentials: 'omit' });
  } catch (error) {
    throw new ApiError(0, `the node did not answer ${method} ${path}: ${error.message}`);
  }
  if (response.status === 401) throw new Unauthorized('the node refused this token');
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === 'string' ? body.error : `${response.status} ${response.statusText}`;
    if (response.status === 403) throw new ApiError(403, `your token may not do this: ${message}`);
    throw new ApiError(response.status, message);
  }
  return body;
}

/** GET a JSON document. */
export function get(path) {
  return call('GET', path);
}

/** GET a JSON document, or null when the node answers 404. */
export async function getOptional(path) {
  try {
    return await call('GET', path);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

/** POST with no body; the node's JSON answer. */
export function post(path) {
  return call('POST', path);
}

/** A path segment or query value, percent-encoded. */
export function part(name) {
  return encodeURIComponent(name);
}

/**
 * Follows the server-sent event stream at `path` until `signal` aborts.
 * EventSource cannot send an Authorization header, so this reads the
 * response body itself and splits it into SSE frames. `onEvent` gets each
 * event's parsed JSON; `onState` hears `live`, `reconnecting` (the stream
 * broke; it is opened again after a pause, `onReconnect` first) and
 * `refused` (401, the stream stops).
 */
export async function follow(path, { signal, onEvent, onState, onReconnect }) {
  let pause = 1000;
  for (let first = true; !signal.aborted; first = false) {
    if (!first) {
      onState('reconnecting');
      await sleep(pause, signal);
      pause = Math.min(pause * 2, 15000);
      if (signal.aborted) return;
      try {
        await onReconnect();
      } catch (error) {
        if (error instanceof Unauthorized) {
          onState('refused');
          return;
        }
        continue;
      }
    }
    try {
      const response = await fetch(path, { headers: { ...headers(), Accept: 'text/event-stream' }, cache: 'no-store', credentials: 'omit', signal });
      if (response.status === 401) {
        onState('refused');
        return;
      }
      if (!response.ok || !response.body) continue;
      onState('live');
      pause = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const { frames, rest } = splitFrames(buffer);
        buffer = rest;
        for (const frame of frames) {
          if (!frame.data) continue;
          let event;
          try {
            event = JSON.parse(frame.data);
          } catch {
            continue;
          }
          onEvent(event);
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
  }
}

/**
 * Splits SSE text into complete frames (`{event, data}`) and the incomplete
 * rest. A frame ends at a blank line; `data:` lines join with newlines;
 * comments (`:` lines, the keep-alives) and other fields are skipped.
 */
export function splitFrames(text) {
  const normalized = text.replace(/\r\n/g, '\n');
  const parts = normalized.split('\n\n');
  const rest = parts.pop();
  const frames = parts.map((block) => {
    let event = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    return { event, data: data.join('\n') };
  });
  return { frames, rest };
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
