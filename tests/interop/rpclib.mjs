// SPDX-License-Identifier: MIT
// Shared by ws.test.mjs and grpc.test.mjs: a daemon serving a tiny generated model (gguf-gen)
// on loopback with an API key, and a poll of REST's /api/health for active_requests.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, tempDir, loopbackFlags, parseReady } from '../e2e/lib.mjs';

export const KEY = 'interop-secret-key';

// Starts the daemon on a fresh gguf-gen model (context 4096, so a generation without
// max_tokens runs long enough to be cancelled), the default, plus a second registry model
// 'other' in models_dir (loaded on demand). Resolves { d, ready, root }.
export async function startModelDaemon(extra = []) {
  const build = process.env.DC_BUILD_DIR;
  if (!build) {
    console.error('DC_BUILD_DIR is not set (run through ctest)');
    process.exit(77);
  }
  const root = tempDir('dc-rpc-');
  const model = join(root, 'tiny.gguf');
  const models = join(root, 'models');
  mkdirSync(models);
  execFileSync(join(build, 'bin', 'gguf-gen'), ['--arch', 'llama', '--dim', '64', '--layers', '2',
    '--heads', '4', '--kv-heads', '4', '--vocab', '512', '--ctx', '4096', '--type', 'f32',
    '--seed', '1', '-o', model]);
  execFileSync(join(build, 'bin', 'gguf-gen'), ['--arch', 'llama', '--dim', '64', '--layers', '2',
    '--heads', '4', '--kv-heads', '4', '--vocab', '512', '--ctx', '4096', '--type', 'f32',
    '--seed', '2', '-o', join(models, 'other.gguf')]);
  const d = startDaemon([...loopbackFlags(join(root, 'state')), '--model', model,
    '--models-dir', models, '--api-key', KEY, ...extra], { timeout: 60000 });
  const ready = parseReady(await d.ready);
  return { d, ready, root };
}

// GET /api/health on the REST server; resolves the parsed JSON (or null when unavailable).
export async function apiHealth(ready) {
  try {
    const r = await fetch(`${ready.rest}/api/health`, {
      headers: { Authorization: `Bearer ${KEY}` },
    });
    if (!r.ok) return null;
    return await r.json();
  } catch {
    return null;
  }
}

// Polls until active_requests and queued_requests are 0; resolves the milliseconds it took, or
// null when the REST server does not report them.
export async function waitIdle(ready, limitMs = 5000) {
  const t0 = Date.now();
  for (;;) {
    const h = await apiHealth(ready);
    if (h === null || typeof h.active_requests !== 'number') return null;
    if (h.active_requests === 0 && (h.queued_requests ?? 0) === 0) return Date.now() - t0;
    if (Date.now() - t0 > limitMs) throw new Error(`still busy after ${limitMs} ms: ${JSON.stringify(h)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
