// SPDX-License-Identifier: MIT
// A 20-node swarm of our daemons on loopback (P2P only, --no-model). Node 0 starts alone; the
// other 19 bootstrap from it. Every daemon provides a key of its own (--provide), which it
// announces in the DHT once its table has peers. Then, through every node in turn, a
// `democritus dht findprovs` client looks up all 20 keys: each must come back with the right
// provider within 30 s. After 5 nodes are killed (SIGKILL, the bootstrap node among them),
// lookups through the survivors still find every key.
// Persistence: a signed record stored on a daemon survives its restart (SQLite in state_dir).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import {
  BIN, startDaemon, tempDir, removeDir, loopbackFlags, parseReady, killAll, cleanEnv, waitFor,
} from './lib.mjs';

const N = 20;
// A PeerId that is not the daemon's (any valid one).
const OTHER_PEER = '12D3KooWMyT95pDZ6F1C6XqWkrnC9ZBetx7vijmCcpvdXrujwo7o';
const KILL = [0, 4, 8, 12, 16];

function dc(args, timeout = 30000) {
  return new Promise((resolve) => {
    execFile(BIN, args, { encoding: 'utf8', timeout, env: cleanEnv() }, (err, stdout, stderr) => {
      resolve({ status: err ? (err.code ?? 1) : 0, stdout, stderr });
    });
  });
}

// Looks up every key through node 'via'; returns the keys whose provider was found right.
// (The CLI takes up to 15 keys a run: two runs of 10.)
async function lookupAll(via, nodes) {
  const found = new Set();
  for (let k = 0; k < nodes.length; k += 10) {
    const r = await dc(['dht', 'findprovs', '--count', '1', '--timeout-ms', '20000',
      '--bootstrap', via.addr, ...nodes.slice(k, k + 10).map((n) => n.key)]);
    for (const line of r.stdout.split('\n')) {
      const [key, peer] = line.split(' ');
      const owner = nodes.find((n) => n.key === key);
      if (owner && owner.peer === peer) found.add(key);
    }
  }
  return found;
}

// Runs fn over items with at most 'limit' at once (the machine has 2 cores).
async function pool(items, limit, fn) {
  const out = [];
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }));
  return out;
}

test('swarm: 20 daemons find each other\'s provider records; 5 killed, lookups still work',
  { timeout: 120000 }, async () => {
    const root = tempDir('dc-swarm-');
    const nodes = [];
    try {
      const start = async (i, extra) => {
        const key = `/democritus/swarm-test/node-${i}-${Math.random().toString(36).slice(2)}`;
        const d = startDaemon([...loopbackFlags(join(root, `n${i}`)), '--no-model',
          '--log-level', 'warn', '--provide', key, ...extra]);
        const ready = parseReady(await d.ready);
        return { ...d, i, key, peer: ready.peer, addr: ready.p2p.split(',')[0] };
      };
      nodes.push(await start(0, []));
      const rest = await Promise.all(Array.from({ length: N - 1 },
        (_, k) => start(k + 1, ['--bootstrap', nodes[0].addr])));
      nodes.push(...rest);
      const t0 = Date.now();

      // Through every node, every key: retried until all are found or 30 s pass.
      const pending = new Map(nodes.map((n) => [n.i, new Set(nodes.map((m) => m.key))]));
      while (Date.now() - t0 < 30000) {
        await pool(nodes.filter((n) => pending.get(n.i).size > 0), 4, async (n) => {
          const found = await lookupAll(n, nodes);
          for (const k of found) pending.get(n.i).delete(k);
        });
        if ([...pending.values()].every((s) => s.size === 0)) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      const missing = [...pending.entries()].filter(([, s]) => s.size > 0)
        .map(([i, s]) => `via node ${i}: ${s.size} key(s) missing`);
      assert.deepEqual(missing, [], 'every node finds every provider record');
      const elapsed = Date.now() - t0;
      assert.ok(elapsed < 30000, `all found in ${elapsed} ms`);

      // Kill 5, the bootstrap node among them; the survivors still answer every lookup.
      for (const i of KILL) nodes[i].proc.kill('SIGKILL');
      await Promise.all(KILL.map((i) => nodes[i].exited));
      const survivors = nodes.filter((n) => !KILL.includes(n.i));
      const t1 = Date.now();
      const results = await pool(survivors.filter((_, k) => k % 3 === 0), 3,
        (n) => lookupAll(n, nodes));
      for (const found of results) {
        for (const n of survivors) assert.ok(found.has(n.key), `survivor key ${n.i} found`);
      }
      assert.ok(Date.now() - t1 < 30000, 'lookups after the kill within 30 s');

      for (const n of survivors) n.proc.kill('SIGTERM');
      const codes = await Promise.all(survivors.map((n) => n.exited));
      for (const [k, c] of codes.entries()) {
        assert.equal(c.code, 0, `node ${survivors[k].i} exit; stderr:\n${survivors[k].stderr()}`);
      }
    } finally {
      killAll();
      removeDir(root);
    }
  });

test('swarm: DHT records persist across a daemon restart (SQLite in state_dir)', async () => {
  const root = tempDir('dc-dhtdb-');
  try {
    const dir = join(root, 'a');
    let a = startDaemon([...loopbackFlags(dir), '--no-model']);
    let ready = parseReady(await a.ready);
    // /democritus/ records are signed with the node's key (read from its state dir): the key
    // ends with its PeerId. A key naming another peer is refused before anything is sent.
    const key = `/democritus/persist/${ready.peer}`;
    let r = await dc(['dht', 'put', `/democritus/persist/${OTHER_PEER}`, 'x', '--state-dir', dir,
      '--bootstrap', ready.p2p.split(',')[0]]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`must be /democritus/<kind>/<PeerId> ending with this node's PeerId, ${ready.peer}`));
    r = await dc(['dht', 'put', key, 'kept', '--state-dir', dir,
      '--bootstrap', ready.p2p.split(',')[0]]);
    assert.equal(r.status, 0, r.stderr);
    a.proc.kill('SIGTERM');
    assert.equal((await a.exited).code, 0, a.stderr());

    a = startDaemon([...loopbackFlags(dir), '--no-model']);
    ready = parseReady(await a.ready);
    r = await dc(['dht', 'get', key, '--bootstrap', ready.p2p.split(',')[0]]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'kept\n');
    r = await dc(['dht', 'get', '--raw', key, '--bootstrap', ready.p2p.split(',')[0]]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.includes('/democritus/record/1'), 'raw: the signed envelope');
    a.proc.kill('SIGTERM');
    await waitFor(() => a.proc.exitCode !== null, 5000, 'exit');
    assert.equal(a.proc.exitCode, 0, a.stderr());
  } finally {
    killAll();
    removeDir(root);
  }
});
