// SPDX-License-Identifier: MIT
// P2P between real daemons on loopback: the ready line names dialable /p2p/ addresses, a second
// daemon bootstraps from the first and both log the connection and identify; daemons in a
// private swarm connect with the same PSK and refuse one with another key, saying why; SIGTERM
// still stops a daemon with connections open within 2 s; /dns4 names work for --bootstrap and
// `democritus ping`, and one that does not resolve is reported as such.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  startDaemon, tempDir, removeDir, loopbackFlags, parseReady, killAll, waitFor, run,
} from './lib.mjs';

async function stop(d) {
  const t0 = Date.now();
  d.proc.kill('SIGTERM');
  const { code } = await d.exited;
  const elapsed = Date.now() - t0;
  assert.equal(code, 0, `exit code; stderr:\n${d.stderr()}`);
  assert.ok(elapsed < 2000, `shutdown took ${elapsed} ms`);
}

function pskFile(dir, name) {
  const path = join(dir, name);
  writeFileSync(path, `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}\n`,
    { mode: 0o600 });
  return path;
}

test('p2p: bootstrap connects two daemons, identify both ways, clean SIGTERM', async () => {
  const root = tempDir();
  try {
    const a = startDaemon(loopbackFlags(join(root, 'a')));
    const ra = parseReady(await a.ready);
    const addrs = ra.p2p.split(',');
    assert.ok(addrs.length >= 1);
    for (const addr of addrs) {
      assert.match(addr, new RegExp(`^/ip4/127\\.0\\.0\\.1/tcp/[1-9][0-9]*/p2p/${ra.peer}$`));
    }
    const info = JSON.parse(readFileSync(join(root, 'a', 'daemon.json'), 'utf8'));
    assert.deepEqual(info.p2p, addrs);

    const b = startDaemon([...loopbackFlags(join(root, 'b')), '--bootstrap', addrs[0]]);
    const rb = parseReady(await b.ready);
    await waitFor(() => b.stderr().includes(`connected to ${ra.peer}`), 10000, 'b connected');
    await waitFor(() => a.stderr().includes(`connected to ${rb.peer}`), 10000, 'a connected');
    await waitFor(() => b.stderr().includes(`identified ${ra.peer}: agent "democritus/`), 10000,
      'b identified a');
    await waitFor(() => a.stderr().includes(`identified ${rb.peer}: agent "democritus/`), 10000,
      'a identified b');

    await stop(a);
    await waitFor(() => b.stderr().includes(`disconnected from ${ra.peer}`), 5000, 'b saw a go');
    await stop(b);
  } finally {
    killAll();
    removeDir(root);
  }
});

test('p2p: /dns4 multiaddrs for --bootstrap and ping; an unresolvable name says so', async () => {
  const root = tempDir();
  try {
    const a = startDaemon(loopbackFlags(join(root, 'a')));
    const ra = parseReady(await a.ready);
    const dns = ra.p2p.split(',')[0].replace('/ip4/127.0.0.1/', '/dns4/localhost/');
    assert.match(dns, /^\/dns4\/localhost\/tcp\/\d+\/p2p\//);

    const b = startDaemon([...loopbackFlags(join(root, 'b')), '--bootstrap', dns]);
    await b.ready;
    await waitFor(() => b.stderr().includes(`connected to ${ra.peer}`), 10000, 'b connected');

    let r = run(['ping', dns, '-n', '1'], { timeout: 20000 });
    assert.equal(r.status, 0, `ping ${dns}:\n${r.stdout}${r.stderr}`);
    r = run(['ping', '/dns4/democritus-test.invalid/tcp/4001', '-n', '1'], { timeout: 20000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /name resolution failed/);

    await stop(b);
    await stop(a);
  } finally {
    killAll();
    removeDir(root);
  }
});

test('p2p: private swarm keys — same key connects, another key is refused with a clear log', async () => {
  const root = tempDir();
  try {
    const k1 = pskFile(root, 'swarm1.key');
    const k2 = pskFile(root, 'swarm2.key');
    const a = startDaemon([...loopbackFlags(join(root, 'a')), '--private-swarm-key-file', k1]);
    const ra = parseReady(await a.ready);
    const addr = ra.p2p.split(',')[0];
    const key1hex = readFileSync(k1, 'utf8').trim().split('\n')[2];
    assert.ok(!a.stderr().includes(key1hex), 'the key is never logged');

    // Same key, given inline this time.
    const b = startDaemon([...loopbackFlags(join(root, 'b')), '--private-swarm-key', key1hex,
      '--bootstrap', addr]);
    const rb = parseReady(await b.ready);
    await waitFor(() => b.stderr().includes(`connected to ${ra.peer}`), 10000, 'b connected');
    await waitFor(() => a.stderr().includes(`connected to ${rb.peer}`), 10000, 'a connected');
    assert.ok(!b.stderr().includes(key1hex), 'the key is never logged');

    // Another key: the dial fails and the listener says why.
    const c = startDaemon([...loopbackFlags(join(root, 'c')), '--private-swarm-key-file', k2,
      '--bootstrap', addr]);
    const rc = parseReady(await c.ready);
    await waitFor(() => c.stderr().includes(`cannot reach bootstrap node ${addr}`), 15000,
      'c refused');
    await waitFor(() => /inbound connection from .* failed during .*private network/.test(a.stderr()),
      15000, 'a logs the refusal');
    assert.ok(!a.stderr().includes(`connected to ${rc.peer}`));

    // No key at all: refused as well.
    const d = startDaemon([...loopbackFlags(join(root, 'd')), '--bootstrap', addr]);
    await d.ready;
    await waitFor(() => d.stderr().includes(`cannot reach bootstrap node ${addr}`), 15000,
      'd refused');

    await stop(a);
    await stop(b);
    await stop(c);
    await stop(d);
  } finally {
    killAll();
    removeDir(root);
  }
});
