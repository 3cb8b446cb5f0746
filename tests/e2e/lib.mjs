// SPDX-License-Identifier: MIT
// Helpers for e2e tests: start the democritus binary under test (DEMOCRITUS_BIN), wait for its
// ready line, run one-shot commands, make and remove temporary state directories. Every
// process a test starts is tracked by PID and killed at exit if the test did not stop it.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BIN = process.env.DEMOCRITUS_BIN;
if (!BIN) {
  console.error('DEMOCRITUS_BIN is not set (run through ctest)');
  process.exit(77);
}

const BUILD = process.env.DC_BUILD_DIR;
// gguf-gen of the build under test, or null (tests that need a model skip without it).
export const GGUF_GEN = BUILD ? join(BUILD, 'bin', 'gguf-gen') : null;

// Writes a tiny llama GGUF (dim 64, 2 layers, vocab 512, f32) with random weights from 'seed'
// to dir/name and returns its path: different seeds are different models.
export function tinyModel(dir, seed = 1, name = 'tiny.gguf') {
  const path = join(dir, name);
  const r = spawnSync(GGUF_GEN, ['--arch', 'llama', '--dim', '64', '--layers', '2', '--heads', '4',
    '--kv-heads', '4', '--vocab', '512', '--type', 'f32', '--seed', String(seed), '-o', path],
  { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`gguf-gen failed: ${r.stderr}`);
  return path;
}

const live = new Set();

// Kills every daemon a test started and has not stopped; tests call it in their finally.
export function killAll() {
  for (const p of live) {
    try { process.kill(p.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  live.clear();
}
process.on('exit', killAll);

// Polls 'fn' until it returns a truthy value or 'ms' pass; resolves with that value.
export async function waitFor(fn, ms = 5000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// An environment without the user's DEMOCRITUS_* settings, so tests see only their flags.
export function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('DEMOCRITUS_')) env[k] = v;
  }
  return { ...env, ...extra };
}

export function tempDir(prefix = 'dc-e2e-') {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}

// Runs a one-shot command; returns { status, stdout, stderr }.
export function run(args, opts = {}) {
  const r = spawnSync(BIN, args, {
    encoding: 'utf8', env: cleanEnv(opts.env), cwd: opts.cwd, timeout: opts.timeout ?? 30000,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

// Flags that keep a test daemon on loopback with free ports.
export function loopbackFlags(stateDir) {
  return ['--state-dir', stateDir, '--listen', '/ip4/127.0.0.1/tcp/0', '--rest-port', '0',
    '--grpc-port', '0', '--ws-port', '0'];
}

// Starts `democritus daemon ...`; resolves with { proc, ready, stderr() } once the ready line
// is printed, rejects if the process exits first or the timeout passes.
export function startDaemon(args, opts = {}) {
  const proc = spawn(BIN, ['daemon', ...args], {
    env: cleanEnv(opts.env), cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  let out = '';
  let err = '';
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => { live.delete(proc); resolve({ code, signal }); });
  });
  proc.stderr.on('data', (d) => { err += d; });
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line in time; stderr:\n${err}`)),
      opts.timeout ?? 20000);
    proc.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) { clearTimeout(timer); resolve(out.slice(0, nl)); }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited (code ${code}, signal ${signal}) before ready:\n${err}`));
    });
  });
  return { proc, ready, exited, stdout: () => out, stderr: () => err };
}

// Parses "ready peer=X p2p=A,B rest=URL ..." into an object.
export function parseReady(line) {
  const m = /^ready( [a-z0-9]+=\S+)+$/.exec(line);
  if (!m) throw new Error(`not a ready line: ${JSON.stringify(line)}`);
  const fields = {};
  for (const part of line.split(' ').slice(1)) {
    const eq = part.indexOf('=');
    fields[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return fields;
}
