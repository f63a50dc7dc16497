// `js-marker`: the `file-marker` resource type written in JavaScript.
//
// A resource whose whole state is a marker file holding the resource's name.
// Online writes it, offline removes it, the probes read it. The file lives in
// a directory the resource's grant preopens (the `filesystem` capability).
//
// componentize-js maps the exported interface `resource-type` to the export
// `resourceType`: its functions, plus the resource `instance` as the class
// `Instance`. A WIT `result` error is returned by throwing its payload (never
// an `Error`, which traps); an imported function's error arrives as a thrown
// error whose `payload` is the WIT value.

import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

const NAME = 'js-marker';
const VERSION = '0.1.0';

/** The problems with `path`, empty when it is usable. */
function pathProblems(properties) {
  const entry = properties.find(([key]) => key === 'path');
  if (entry === undefined) {
    const message = '`path` is required: set it to a file in a granted directory, such as /state/web.online';
    return [{ property: 'path', message }];
  }
  const path = entry[1];
  // Preopened directories are named by absolute guest paths.
  if (path.startsWith('/') && !path.endsWith('/')) return [];
  return [{ property: 'path', message: `\`${path}\` is not an absolute file path such as /state/web.online` }];
}

function describe(problems) {
  return problems.map(({ property, message }) => (property ? `${property}: ${message}` : message)).join('; ');
}

// --- A few file operations on WASI preopens, which JavaScript has no API for.

let preopens; // Fetched on first use: at build time the preopens are not the host's.

/** The preopened directory holding `path`, and `path` relative to it. */
function locate(path) {
  preopens ??= getDirectories();
  let best;
  for (const [dir, guest] of preopens) {
    const prefix = guest.endsWith('/') ? guest : `${guest}/`;
    if (path.startsWith(prefix) && (best === undefined || prefix.length > best[2].length)) {
      best = [dir, path.slice(prefix.length), prefix];
    }
  }
  if (best === undefined) throw new FsError('not-permitted', 'no granted directory holds it');
  return best;
}

class FsError {
  constructor(code, message = code) {
    this.code = code;
    this.message = message;
  }
}

/** Runs `operation`, turning a WASI error into an `FsError`. */
function wasi(operation) {
  try {
    return operation();
  } catch (error) {
    if (error instanceof FsError) throw error;
    const code = String(error?.payload ?? error);
    throw new FsError(code);
  }
}

function withFile(path, openFlags, descriptorFlags, use) {
  const [dir, relative] = locate(path);
  const file = wasi(() => dir.openAt({ symlinkFollow: true }, relative, openFlags, descriptorFlags));
  try {
    return use(file);
  } finally {
    file[Symbol.dispose]?.();
  }
}

function writeFile(path, text) {
  withFile(path, { create: true, truncate: true }, { write: true }, (file) => {
    const bytes = new TextEncoder().encode(text);
    let written = 0n;
    while (written < BigInt(bytes.length)) {
      written += wasi(() => file.write(bytes.subarray(Number(written)), written));
    }
  });
}

function readFile(path) {
  return withFile(path, {}, { read: true }, (file) => {
    const chunks = [];
    let offset = 0n;
    for (;;) {
      const [chunk, end] = wasi(() => file.read(65536n, offset));
      chunks.push(chunk);
      offset += BigInt(chunk.length);
      if (end || chunk.length === 0) break;
    }
    const bytes = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
    chunks.reduce((at, chunk) => (bytes.set(chunk, at), at + chunk.length), 0);
    return new TextDecoder().decode(bytes);
  });
}

/** Removes `path`; a file already gone is not an error. */
function removeFile(path) {
  const [dir, relative] = locate(path);
  try {
    wasi(() => dir.unlinkFileAt(relative));
  } catch (error) {
    if (error.code !== 'no-entry') throw error;
  }
}

function exists(path) {
  try {
    const [dir, relative] = locate(path);
    wasi(() => dir.statAt({ symlinkFollow: true }, relative));
    return true;
  } catch {
    return false;
  }
}

// --- The resource type.

class Instance {
  constructor(name, path) {
    this.name = name;
    this.path = path;
  }

  static open(name, properties) {
    const problems = pathProblems(properties);
    if (problems.length > 0) throw { tag: 'invalid-config', val: describe(problems) };
    return new Instance(name, properties.find(([key]) => key === 'path')[1]);
  }

  online(_context) {
    try {
      writeFile(this.path, this.name);
    } catch (error) {
      const message = `cannot write ${this.path}: ${error.message}; is its directory granted to the resource?`;
      throw { tag: 'fatal', val: message };
    }
  }

  offline(_context) {
    try {
      removeFile(this.path);
    } catch (error) {
      throw { tag: 'fatal', val: `cannot remove ${this.path}: ${error.message}` };
    }
  }

  terminate() {
    // Best effort by contract; a failure shows in the next probe.
    try {
      removeFile(this.path);
    } catch {}
  }

  looksAlive() {
    return exists(this.path);
  }

  isAlive(_level) {
    let content;
    try {
      content = readFile(this.path);
    } catch (error) {
      if (error.code === 'no-entry') return { alive: false, reason: `${this.path} is missing` };
      return { alive: false, reason: `${this.path} is unreadable: ${error.message}` };
    }
    if (content === this.name) return { alive: true, reason: `${this.path} holds \`${content}\`` };
    return { alive: false, reason: `${this.path} holds \`${content}\`, expected \`${this.name}\`` };
  }

  control(code, _input) {
    throw { tag: 'invalid-config', val: `unknown control code \`${code}\`` };
  }

  notify(_event) {}
}

export const resourceType = {
  metadata() {
    return {
      name: NAME,
      version: VERSION,
      description: 'Keeps its state as a marker file (file-marker, written in JavaScript).',
      properties: [
        {
          name: 'path',
          kind: 'text',
          required: true,
          defaultValue: undefined,
          description: "The marker file's path inside a granted directory.",
        },
      ],
      timing: { looksAliveIntervalMs: 0, isAliveIntervalMs: 0, pendingTimeoutMs: 0, probeTimeoutMs: 0 },
      capabilities: ['filesystem'],
    };
  },

  validate(properties) {
    const problems = pathProblems(properties);
    if (problems.length > 0) throw problems;
  },

  Instance,
};
