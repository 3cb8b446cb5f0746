// SPDX-License-Identifier: MIT
// `democritus ask`, `democritus peers list`, the C client SDK (through its example program
// dc-ask-example) and the REST admin additions (GET /api/peers, POST /api/peers/connect, CORS,
// the per-key rate limit), each against real daemons on loopback serving a tiny gguf-gen model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  startDaemon, tempDir, removeDir, loopbackFlags, parseReady, killAll, run,
  tinyModel, GGUF_GEN,
} from './lib.mjs';

const BUILD = process.env.DC_BUILD_DIR;
const EXAMPLE = BUILD ? join(BUILD, 'bin', 'dc-ask-example') : null;

async function start(root, name, model, extra = []) {
  const state = join(root, name);
  const args = [...loopbackFlags(state), '--models-dir', join(root, 'none')];
  if (model) args.push('--model', model); else args.push('--no-model');
  const d = startDaemon([...args, ...extra], { timeout: 60000 });
  const ready = parseReady(await d.ready);
  return { d, state, url: ready.rest, p2p: ready.p2p.split(',')[0], peer: ready.peer };
}

async function stop(d) {
  d.proc.kill('SIGTERM');
  const { code } = await d.exited;
  assert.equal(code, 0, `daemon exit code; stderr:\n${d.stderr()}`);
}

const skipModel = !GGUF_GEN || !existsSync(GGUF_GEN);

test('ask: plain, streamed, keys, the example program', { skip: skipModel && 'no gguf-gen' },
  async () => {
    const root = tempDir('dc-ask-');
    try {
      const model = tinyModel(root);
      const n = await start(root, 's', model, ['--api-key', 'sekrit']);
      const base = ['--state-dir', n.state, '--api-key', 'sekrit'];

      let r = run(['ask', 'Hello there', '--max-tokens', '8', ...base]);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(r.stdout.length > 1, 'an answer');
      assert.ok(r.stdout.endsWith('\n'));

      // Streaming prints the same kind of answer, token by token; seed-free but bounded.
      r = run(['ask', 'Hello there', '--stream', '--max-tokens', '8', ...base]);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(r.stdout.length > 1);

      // The key from the environment, as the daemon reads it.
      r = run(['ask', 'Hi', '--max-tokens', '2', '--state-dir', n.state],
        { env: { DEMOCRITUS_API_API_KEYS: 'sekrit' } });
      assert.equal(r.status, 0, r.stderr);

      // A wrong key: the server's OpenAI error message, one line, exit 1.
      r = run(['ask', 'Hi', '--state-dir', n.state, '--api-key', 'wrong']);
      assert.equal(r.status, 1);
      assert.equal(r.stderr, 'democritus ask: HTTP 401: Incorrect API key provided\n');

      // --url instead of daemon.json; --experts asks the model "swarm", which a node that
      // knows no other expert answers with its own model (tests/e2e/experts.test.mjs has more).
      r = run(['ask', 'Hi', '--url', n.url, '--api-key', 'sekrit', '--experts', '3',
        '--max-tokens', '2']);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(r.stdout.length > 1);
      assert.equal(run(['ask', 'x', '--experts', '9', ...base]).status, 2);
      assert.equal(run(['ask', 'x', '--experts', '2', '--model', 'local', ...base]).status, 2);

      // Usage errors exit 2.
      assert.equal(run(['ask', ...base]).status, 2);
      assert.equal(run(['ask', 'x', '--max-tokens', 'lots', ...base]).status, 2);
      assert.equal(run(['ask', 'x', '--peer', '/ip4/1.2.3.4/tcp/1', '--model', 'm', ...base]).status,
        2);

      // The SDK's example program, plain and streamed.
      if (EXAMPLE && existsSync(EXAMPLE)) {
        for (const extra of [[], ['--stream']]) {
          const e = spawnSync(EXAMPLE, [n.url, 'Hello', ...extra],
            { encoding: 'utf8', env: { ...process.env, DEMOCRITUS_API_KEY: 'sekrit' } });
          assert.equal(e.status, 0, e.stderr);
          assert.match(e.stdout, /\[(stop|length); \d+ prompt \+ \d+ completion tokens\]\n$/);
        }
        const e = spawnSync(EXAMPLE, [n.url, 'Hello'], { encoding: 'utf8' });
        assert.equal(e.status, 1);
        assert.match(e.stderr, /^ask: HTTP 401: /);
      }
      await stop(n.d);
    } finally {
      killAll();
      removeDir(root);
    }
  });

test('ask and peers list without a running daemon: one line, exit 1', () => {
  const root = tempDir('dc-ask-none-');
  try {
    let r = run(['ask', 'Hello', '--state-dir', join(root, 'nothing')]);
    assert.equal(r.status, 1);
    assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
    assert.match(r.stderr, /^democritus ask: no daemon is running on state directory/);

    // A daemon.json left by a dead process.
    const stale = join(root, 'stale');
    run(['id', '--state-dir', stale]);
    writeFileSync(join(stale, 'daemon.json'),
      JSON.stringify({ pid: 2147483, rest: 'http://127.0.0.1:1' }));
    r = run(['peers', 'list', '--state-dir', stale]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^democritus peers: no daemon is running .*has exited\)\n$/);

    // Nothing listening at --url.
    r = run(['ask', 'Hello', '--url', 'http://127.0.0.1:1']);
    assert.equal(r.status, 1);
    assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
    assert.match(r.stderr, /not running or not reachable .*Connection refused/);
  } finally {
    removeDir(root);
  }
});

test('peers list, /api/peers and /api/peers/connect between two daemons', async () => {
  const root = tempDir('dc-peers-');
  try {
    const a = await start(root, 'a', null);
    const b = await start(root, 'b', null);
    let r = run(['peers', 'list', '--state-dir', a.state]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'no peers connected\n');

    // Bad input to connect: OpenAI error objects.
    let res = await fetch(`${a.url}/api/peers/connect`, { method: 'POST', body: '{"multiaddr":1}' });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.param, 'multiaddr');
    res = await fetch(`${a.url}/api/peers/connect`,
      { method: 'POST', body: '{"multiaddr":"/ip4/nope"}' });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.code, 'invalid_multiaddr');
    res = await fetch(`${a.url}/api/peers/connect`, { method: 'GET' });
    assert.equal(res.status, 405);

    // A port nobody listens on: 502 with the reason.
    res = await fetch(`${a.url}/api/peers/connect`,
      { method: 'POST', body: JSON.stringify({ multiaddr: '/ip4/127.0.0.1/tcp/1' }) });
    assert.equal(res.status, 502);
    assert.match((await res.json()).error.message, /cannot connect to \/ip4\/127\.0\.0\.1\/tcp\/1/);

    res = await fetch(`${a.url}/api/peers/connect`,
      { method: 'POST', body: JSON.stringify({ multiaddr: b.p2p }) });
    assert.equal(res.status, 200);
    const c = await res.json();
    assert.equal(c.peer_id, b.peer);
    assert.equal(c.connected, true);

    // Both sides list each other once identify and the first ping are in.
    const deadline = Date.now() + 10000;
    let peers;
    for (;;) {
      peers = (await (await fetch(`${a.url}/api/peers`)).json()).peers;
      if (peers.length === 1 && peers[0].identified && peers[0].rtt_ms !== null) break;
      assert.ok(Date.now() < deadline, `peer not identified/pinged: ${JSON.stringify(peers)}`);
      await new Promise((ok) => setTimeout(ok, 100));
    }
    assert.equal(peers[0].peer_id, b.peer);
    assert.equal(peers[0].direction, 'outbound');
    assert.match(peers[0].agent, /^democritus\//);
    assert.ok(peers[0].protocols.includes('/ipfs/ping/1.0.0'));
    assert.ok(peers[0].addresses.length >= 1);

    r = run(['peers', 'list', '--state-dir', a.state]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^PEER ID +DIR +RTT +AGENT\n/);
    assert.ok(r.stdout.includes(b.peer));
    assert.match(r.stdout, /outbound +[\d.]+ ms +democritus\//);
    r = run(['peers', 'list', '--verbose', '--state-dir', b.state]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.includes(a.peer));
    assert.match(r.stdout, /inbound/);
    assert.match(r.stdout, /protocol: +\/ipfs\/id\/1\.0\.0/);
    r = run(['peers', 'list', '--json', '--state-dir', b.state]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout)[0].peer_id, a.peer);
    assert.equal(run(['peers', 'show', '--state-dir', b.state]).status, 2);

    await stop(b.d);
    await stop(a.d);
  } finally {
    killAll();
    removeDir(root);
  }
});

test('ask --peer: dials through the daemon, then forwards to the peer',
  { skip: skipModel && 'no gguf-gen' }, async () => {
    const root = tempDir('dc-ask-peer-');
    try {
      const model = tinyModel(root);
      const a = await start(root, 'a', model);
      const b = await start(root, 'b', model);
      // The answer itself is compared with the peer's in remote.test.mjs.
      let r = run(['ask', 'Hello', '--peer', b.p2p, '--max-tokens', '4', '--state-dir', a.state]);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(r.stdout.length > 1, 'an answer from the peer');
      r = run(['ask', 'Hello', '--peer', b.p2p, '--max-tokens', '4', '--stream',
        '--state-dir', a.state]);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(r.stdout.length > 1, 'a streamed answer from the peer');
      // The daemon is now connected to the peer.
      const peers = (await (await fetch(`${a.url}/api/peers`)).json()).peers;
      assert.equal(peers[0].peer_id, b.peer);
      // An unreachable peer: one line, exit 1.
      const u = run(['ask', 'Hello', '--peer', '/ip4/127.0.0.1/tcp/1', '--state-dir', a.state]);
      assert.equal(u.status, 1);
      assert.match(u.stderr, /^democritus ask: HTTP 502: cannot connect to \/ip4\/127\.0\.0\.1\/tcp\/1/);
      await stop(b.d);
      await stop(a.d);
    } finally {
      killAll();
      removeDir(root);
    }
  });

test('CORS origins and the per-key rate limit', async () => {
  const root = tempDir('dc-cors-');
  try {
    const n = await start(root, 's', null, ['--cors-origin', 'https://app.example',
      '--rate-limit-rpm', '3', '--api-key', 'k1', '--api-key', 'k2']);
    const auth = (k) => ({ authorization: `Bearer ${k}` });

    // Preflight from an allowed origin: 204 before auth, with the allowed methods.
    let res = await fetch(`${n.url}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' },
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://app.example');
    assert.match(res.headers.get('access-control-allow-methods'), /POST/);
    assert.match(res.headers.get('access-control-allow-headers'), /Authorization/);
    // Another origin gets no preflight (401: it is just an unauthenticated OPTIONS).
    res = await fetch(`${n.url}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
    });
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('access-control-allow-origin'), null);

    // Allowed origin on a normal answer; three requests per minute per key, then 429.
    for (let i = 0; i < 3; i++) {
      res = await fetch(`${n.url}/v1/models`,
        { headers: { ...auth('k1'), origin: 'https://app.example' } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('access-control-allow-origin'), 'https://app.example');
      assert.equal(res.headers.get('vary'), 'Origin');
    }
    res = await fetch(`${n.url}/v1/models`, { headers: auth('k1') });
    assert.equal(res.status, 429);
    const retry = Number(res.headers.get('retry-after'));
    assert.ok(retry >= 1 && retry <= 20, `Retry-After ${retry}`);
    const e = (await res.json()).error;
    assert.equal(e.code, 'rate_limit_exceeded');
    assert.equal(e.type, 'rate_limit_error');
    // Another key has its own bucket; /health is never limited.
    res = await fetch(`${n.url}/v1/models`, { headers: auth('k2') });
    assert.equal(res.status, 200);
    for (let i = 0; i < 5; i++) assert.equal((await fetch(`${n.url}/health`)).status, 200);
    // The 429s are counted in /metrics (with k2, which has tokens left).
    const m = await (await fetch(`${n.url}/metrics`, { headers: auth('k2') })).text();
    assert.match(m, /democritus_rejected_total [1-9]/);
    await stop(n.d);

    // Without keys the bucket is per client address.
    const o = await start(root, 'o', null, ['--rate-limit-rpm', '2']);
    assert.equal((await fetch(`${o.url}/api/health`)).status, 200);
    assert.equal((await fetch(`${o.url}/api/peers`)).status, 200);
    res = await fetch(`${o.url}/api/peers`);
    assert.equal(res.status, 429);
    assert.match((await res.json()).error.message, /this address/);
    await stop(o.d);
  } finally {
    killAll();
    removeDir(root);
  }
});
