// SPDX-License-Identifier: MIT
// The daemon's lifecycle through its real interface: the ready line, daemon.json, the state
// directory lock, file modes, the identity key, signals, and the CLI's exit codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  existsSync, readFileSync, readdirSync, statSync, writeFileSync, chmodSync, mkdirSync,
} from 'node:fs';
import { join } from 'node:path';
import {
  run, startDaemon, tempDir, removeDir, loopbackFlags, parseReady, killAll, waitFor,
} from './lib.mjs';

const mode = (p) => statSync(p).mode & 0o777;

async function stopAndCheck(d, signal, stateDir) {
  const t0 = Date.now();
  d.proc.kill(signal);
  const { code } = await d.exited;
  const elapsed = Date.now() - t0;
  assert.equal(code, 0, `exit code after ${signal}; stderr:\n${d.stderr()}`);
  assert.ok(elapsed < 2000, `shutdown took ${elapsed} ms`);
  assert.ok(!existsSync(join(stateDir, 'daemon.json')), 'daemon.json removed');
  assert.ok(!existsSync(join(stateDir, 'daemon.lock')), 'lock file removed');
}

test('daemon: ready line, daemon.json, lock, modes, id, SIGTERM', async () => {
  const root = tempDir();
  const state = join(root, 'state', 'nested');
  try {
    const d = startDaemon(loopbackFlags(state));
    const ready = parseReady(await d.ready);
    assert.match(ready.peer, /^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$/);

    const info = JSON.parse(readFileSync(join(state, 'daemon.json'), 'utf8'));
    assert.equal(info.pid, d.proc.pid);
    assert.equal(info.peer_id, ready.peer);
    assert.equal(mode(state), 0o700);
    assert.equal(mode(join(state, 'identity.key')), 0o600);
    assert.equal(mode(join(state, 'daemon.json')), 0o600);
    await waitFor(() => d.stderr().includes(`peer id ${ready.peer}`), 5000, 'peer id log');

    // A second daemon on the same state directory is refused, naming the first one's pid.
    const second = run(['daemon', ...loopbackFlags(state)]);
    assert.equal(second.status, 1);
    assert.match(second.stderr, new RegExp(`another daemon \\(pid ${d.proc.pid}\\) is running`));
    assert.equal(second.stdout, '');

    // `id` reads the key beside the running daemon; keygen refuses to replace it under it.
    const id = run(['id', '--state-dir', state]);
    assert.equal(id.status, 0, id.stderr);
    assert.equal(id.stdout.trim(), ready.peer);
    const kg = run(['keygen', '--force', '--state-dir', state]);
    assert.equal(kg.status, 1);
    assert.match(kg.stderr, /a daemon is running/);

    await stopAndCheck(d, 'SIGTERM', state);
    // Everything the daemon wrote in its state directory (key, DHT and peer stores with their
    // SQLite -wal/-shm files, caches) is private to the user.
    for (const f of readdirSync(state)) {
      const p = join(state, f);
      if (statSync(p).isFile()) assert.equal(mode(p), 0o600, `mode of ${f}`);
    }

    // The same key is used on the next start.
    const d2 = startDaemon(loopbackFlags(state));
    assert.equal(parseReady(await d2.ready).peer, ready.peer);
    await stopAndCheck(d2, 'SIGINT', state);
  } finally {
    killAll();
    removeDir(root);
  }
});

test('daemon: bad configuration exits 2 and touches no state', () => {
  const root = tempDir();
  const state = join(root, 'state');
  try {
    const cfg = join(root, 'config.toml');
    writeFileSync(cfg, '[api]\nrest_port = 70000\n');
    const r = run(['daemon', '--config', cfg, '--state-dir', state]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /config\.toml:2: \[api\] rest_port: 70000 is out of range/);
    assert.ok(!existsSync(state), 'state dir not created');

    writeFileSync(cfg, '[node]\nnmae = "x"\n');
    const r2 = run(['daemon', '--config', cfg, '--state-dir', state]);
    assert.equal(r2.status, 2);
    assert.match(r2.stderr, /unknown key 'nmae' \(did you mean 'name'\?\)/);

    const r3 = run(['daemon', '--state-dir', state], { env: { DEMOCRITUS_LOG_LEVEL: 'loud' } });
    assert.equal(r3.status, 2);
    assert.match(r3.stderr, /DEMOCRITUS_LOG_LEVEL: must be one of/);

    const r4 = run(['daemon', '--config', join(root, 'missing.toml'), '--state-dir', state]);
    assert.equal(r4.status, 2);
    assert.match(r4.stderr, /missing\.toml: cannot read config file/);
    assert.ok(!existsSync(state), 'state dir not created');
  } finally {
    removeDir(root);
  }
});

test('identity: refuses an unsafe or corrupt key file', () => {
  const root = tempDir();
  try {
    const state = join(root, 's');
    const first = run(['id', '--state-dir', state]);
    assert.equal(first.status, 0, first.stderr);
    const key = join(state, 'identity.key');
    chmodSync(key, 0o644);
    const r = run(['daemon', ...loopbackFlags(state)]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /mode 0644.*0600/);
    chmodSync(key, 0o600);
    writeFileSync(key, 'garbage');
    const r2 = run(['id', '--state-dir', state]);
    assert.equal(r2.status, 1);
    assert.match(r2.stderr, /identity\.key/);
    // keygen: refuses an existing file without --force, replaces it with --force.
    const kg = run(['keygen', '--state-dir', state]);
    assert.equal(kg.status, 1);
    assert.match(kg.stderr, /already exists; use --force/);
    const kf = run(['keygen', '--force', '--state-dir', state]);
    assert.equal(kf.status, 0, kf.stderr);
    assert.equal(run(['id', '--state-dir', state]).stdout, kf.stdout);
    assert.equal(mode(key), 0o600);
  } finally {
    removeDir(root);
  }
});

test('cli: usage errors exit 2, --help exits 0, unbuilt commands exit 1', () => {
  const root = tempDir();
  try {
    assert.equal(run([]).status, 2);
    const u = run(['frobnicate']);
    assert.equal(u.status, 2);
    assert.match(u.stderr, /unknown command 'frobnicate'/);
    assert.match(u.stderr, /usage: democritus/);
    const f = run(['id', '--bogus']);
    assert.equal(f.status, 2);
    assert.match(f.stderr, /unknown option '--bogus'/);
    assert.equal(run(['daemon', '--rest-port']).status, 2);
    for (const cmd of ['daemon', 'ask', 'generate', 'peers', 'reputation', 'ledger', 'models',
      'benchmark', 'id', 'keygen', 'config', 'version']) {
      const h = run([cmd, '--help']);
      assert.equal(h.status, 0, `${cmd} --help`);
      assert.match(h.stdout, new RegExp(`usage: democritus ${cmd}`));
    }
    assert.match(run(['version']).stdout, /^democritus \d+\.\d+\.\d+\n$/);
    const ask = run(['ask', 'hello', '--state-dir', join(root, 's')]);
    assert.equal(ask.status, 1);
    assert.match(ask.stderr, /no daemon is running/);
    const rep = run(['reputation', 'show', '--state-dir', join(root, 's')]);
    assert.equal(rep.status, 1);
    assert.match(rep.stderr, /not available in this build yet/);
    assert.equal(run(['peers', 'list']).status, 1);
    assert.equal(run(['peers', 'frob']).status, 2);
  } finally {
    removeDir(root);
  }
});

test('config: show redacts secrets; flags, env and file combine', () => {
  const root = tempDir();
  try {
    const cfg = join(root, 'c.toml');
    writeFileSync(cfg, '[api]\napi_keys = ["sekrit-key"]\nrest_port = 9\n[node]\nname = "n1"\n');
    const r = run(['config', 'show', '--config', cfg, '--rest-port', '10'],
      { env: { DEMOCRITUS_NODE_NAME: 'from-env' } });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /sekrit/);
    assert.match(r.stdout, /api_keys = \["<redacted>"\]/);
    assert.match(r.stdout, /rest_port = 10/);
    assert.match(r.stdout, /name = "from-env"/);
    // ./config.toml is picked up from the working directory.
    mkdirSync(join(root, 'cwd'));
    writeFileSync(join(root, 'cwd', 'config.toml'), '[api]\nws_port = 1234\n');
    const r2 = run(['config', 'show'], { cwd: join(root, 'cwd') });
    assert.match(r2.stdout, /ws_port = 1234/);
    assert.match(r2.stdout, /# source: config\.toml/);
  } finally {
    removeDir(root);
  }
});

test('daemon: --log-format json writes one JSON object per line, no secrets', async () => {
  const root = tempDir();
  const state = join(root, 's');
  try {
    const d = startDaemon([...loopbackFlags(state), '--log-format', 'json', '--log-level',
      'debug', '--api-key', 'top-secret-key']);
    const ready = parseReady(await d.ready);
    d.proc.kill('SIGTERM');
    assert.equal((await d.exited).code, 0);
    const lines = d.stderr().trim().split('\n');
    assert.ok(lines.length >= 3);
    for (const line of lines) {
      const o = JSON.parse(line);
      assert.ok(o.ts && o.level && o.component && typeof o.msg === 'string', line);
    }
    assert.ok(lines.some((l) => JSON.parse(l).msg.includes(ready.peer)));
    assert.doesNotMatch(d.stderr(), /top-secret-key/);
  } finally {
    killAll();
    removeDir(root);
  }
});
