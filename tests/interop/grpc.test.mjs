// SPDX-License-Identifier: MIT
// The gRPC interface driven by @grpc/grpc-js + @grpc/proto-loader, loading proto/ as shipped:
// Chat (server streaming, usage on the last chunk), Health, ListPeers, GetReputation, a
// deadline (DEADLINE_EXCEEDED, generation stopped), a client cancel (generation stopped), a bad
// key (UNAUTHENTICATED), an unknown method (UNIMPLEMENTED), a bad protobuf (INVALID_ARGUMENT),
// invalid parameters (INVALID_ARGUMENT), and grpc.health.v1.Health/Check without a key. The
// model resolves as on REST (a second registry model loaded on demand; an unknown one
// NOT_FOUND; a PeerId forwarded to that peer), the request limit is the configured grpc_max_message_bytes, and a second daemon
// checks admission: a full model queue and the rate limit REST shares are RESOURCE_EXHAUSTED
// with a grpc-message that says when to retry.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { removeDir, killAll } from '../e2e/lib.mjs';
import { KEY, startModelDaemon, waitIdle } from './rpclib.mjs';

const protoDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'proto');
const def = protoLoader.loadSync(['democritus.proto', 'grpc/health/v1/health.proto'], {
  includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true,
  oneofs: true,
});
const pkg = grpc.loadPackageDefinition(def);
const LIMIT = 65536; // --grpc-max-message-bytes

let srv;
let client;
let health;
const auth = new grpc.Metadata();
auth.set('authorization', `Bearer ${KEY}`);

before(async () => {
  srv = await startModelDaemon(['--grpc-max-message-bytes', String(LIMIT)]);
  assert.match(srv.ready.grpc, /^127\.0\.0\.1:\d+$/);
  client = new pkg.democritus.v1.Democritus(srv.ready.grpc, grpc.credentials.createInsecure());
  health = new pkg.grpc.health.v1.Health(srv.ready.grpc, grpc.credentials.createInsecure());
});

after(async () => {
  client?.close();
  health?.close();
  if (srv) {
    srv.d.proc.kill('SIGTERM');
    await srv.d.exited;
    removeDir(srv.root);
  }
  killAll();
});

const unary = (c, method, req, md = auth, opts = {}) => new Promise((resolve, reject) => {
  c[method](req, md, opts, (err, res) => (err ? reject(err) : resolve(res)));
});

// Collects a Chat stream: resolves { chunks } or rejects with the call's error.
function chatStream(req, md = auth, opts = {}, onCall = () => {}, c = client) {
  return new Promise((resolve, reject) => {
    const call = c.Chat(req, md, opts);
    const chunks = [];
    call.on('data', (c) => { chunks.push(c); onCall(call, chunks); });
    call.on('error', (e) => { e.chunks = chunks; reject(e); });
    call.on('end', () => resolve({ chunks }));
  });
}

const messages = [{ role: 'user', content: 'Tell me a story.' }];
// A generation that lasts: greedy, this model writes until its context is full (4040 tokens,
// seconds under ASan), where sampling may meet the end-of-text token within a few ms.
const long = { messages, temperature: 0 };

test('grpc: Chat streams chunks, the last with finish_reason and usage', async () => {
  const { chunks } = await chatStream({ messages, max_tokens: 10, temperature: 0, seed: '1' });
  assert.ok(chunks.length >= 1);
  const last = chunks.at(-1);
  assert.ok(['stop', 'length'].includes(last.finish_reason), JSON.stringify(last));
  assert.ok(last.usage.prompt_tokens > 0);
  assert.ok(last.usage.completion_tokens > 0 && last.usage.completion_tokens <= 10);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
  for (const c of chunks.slice(0, -1)) {
    assert.equal(c.finish_reason, '');
    assert.ok(c.text.length > 0);
  }
});

test('grpc: Health, ListPeers, GetReputation', async () => {
  const h = await unary(client, 'Health', {});
  assert.equal(h.status, 'ok');
  assert.equal(h.model_loaded, true);
  assert.equal(h.model, 'tiny');
  assert.equal(typeof h.active_requests, 'number');
  assert.ok(h.uptime_s >= 0);
  const p = await unary(client, 'ListPeers', {});
  assert.ok(Array.isArray(p.peers));
  const r = await unary(client, 'GetReputation', { peer_id: '' });
  assert.ok(Array.isArray(r.entries));
});

test('grpc: grpc.health.v1 Check needs no key', async () => {
  const r = await unary(health, 'Check', { service: '' }, new grpc.Metadata());
  assert.equal(r.status, 'SERVING');
  const r2 = await unary(health, 'Check', { service: 'democritus.v1.Democritus' }, new grpc.Metadata());
  assert.equal(r2.status, 'SERVING');
  await assert.rejects(unary(health, 'Check', { service: 'nope' }, new grpc.Metadata()),
    (e) => e.code === grpc.status.NOT_FOUND);
});

test('grpc: a bad or missing key is UNAUTHENTICATED', async () => {
  const bad = new grpc.Metadata();
  bad.set('authorization', 'Bearer wrong');
  await assert.rejects(unary(client, 'Health', {}, bad), (e) => e.code === grpc.status.UNAUTHENTICATED);
  await assert.rejects(unary(client, 'ListPeers', {}, new grpc.Metadata()),
    (e) => e.code === grpc.status.UNAUTHENTICATED);
  await assert.rejects(chatStream({ messages }, bad), (e) => e.code === grpc.status.UNAUTHENTICATED);
});

test('grpc: a deadline ends the call with DEADLINE_EXCEEDED and stops the generation', async () => {
  const t0 = Date.now();
  await assert.rejects(chatStream(long, auth, { deadline: Date.now() + 300 }),
    (e) => e.code === grpc.status.DEADLINE_EXCEEDED);
  assert.ok(Date.now() - t0 < 3000);
  const ms = await waitIdle(srv.ready);
  if (ms !== null) console.log(`# slot freed ${ms} ms after the deadline`);
});

test('grpc: cancelling the call stops the generation', async () => {
  await assert.rejects(chatStream(long, auth, {}, (call, chunks) => {
    if (chunks.length === 1) call.cancel();
  }), (e) => e.code === grpc.status.CANCELLED);
  const ms = await waitIdle(srv.ready);
  if (ms !== null) {
    console.log(`# slot freed ${ms} ms after the cancel`);
    assert.ok(ms < 1000);
  }
});

test('grpc: invalid parameters are INVALID_ARGUMENT', async () => {
  await assert.rejects(chatStream({ messages: [] }), (e) => e.code === grpc.status.INVALID_ARGUMENT && /messages/.test(e.details));
  await assert.rejects(chatStream({ messages, temperature: 5 }),
    (e) => e.code === grpc.status.INVALID_ARGUMENT && /temperature/.test(e.details));
  await assert.rejects(chatStream({ messages: [{ role: 'robot', content: 'x' }] }),
    (e) => e.code === grpc.status.INVALID_ARGUMENT);
  await assert.rejects(chatStream({ messages, model: 'no-such-model' }),
    (e) => e.code === grpc.status.NOT_FOUND);
});

test('grpc: unknown method is UNIMPLEMENTED, bad protobuf INVALID_ARGUMENT', async () => {
  const raw = new grpc.Client(srv.ready.grpc, grpc.credentials.createInsecure());
  const call = (path, bytes) => new Promise((resolve, reject) => {
    raw.makeUnaryRequest(path, (b) => b, (b) => b, bytes, auth, (err, res) => (err ? reject(err) : resolve(res)));
  });
  await assert.rejects(call('/democritus.v1.Democritus/Nope', Buffer.alloc(0)),
    (e) => e.code === grpc.status.UNIMPLEMENTED);
  await assert.rejects(call('/democritus.v1.Democritus/Health', Buffer.from([0xff, 0xff, 0xff])),
    (e) => e.code === grpc.status.INVALID_ARGUMENT);
  await assert.rejects(call('/democritus.v1.Democritus/GetReputation', Buffer.from([0x0a, 0x05, 0x61])),
    (e) => e.code === grpc.status.INVALID_ARGUMENT);
  raw.close();
});

test('grpc: a message over 4 MiB is RESOURCE_EXHAUSTED and the server keeps serving', async () => {
  const big = 'x'.repeat(4 * 1024 * 1024 + 100);
  await assert.rejects(chatStream({ messages: [{ role: 'user', content: big }] }),
    (e) => e.code === grpc.status.RESOURCE_EXHAUSTED);
  const h = await unary(client, 'Health', {});
  assert.equal(h.status, 'ok');
});

test('grpc: the configured grpc_max_message_bytes (64 KiB) is the limit', async () => {
  await assert.rejects(chatStream({ messages: [{ role: 'user', content: 'x'.repeat(LIMIT + 100) }] }),
    (e) => e.code === grpc.status.RESOURCE_EXHAUSTED);
  // Under the limit the message is taken (and refused for the model's context instead).
  await assert.rejects(chatStream({ messages: [{ role: 'user', content: 'x'.repeat(LIMIT - 200) }], max_tokens: 1 }),
    (e) => e.code === grpc.status.INVALID_ARGUMENT && /context/.test(e.details));
});

test('grpc: Chat with a non-default registry model loads it on demand', async () => {
  const { chunks } = await chatStream({ messages, model: 'other', max_tokens: 5, temperature: 0 });
  const last = chunks.at(-1);
  assert.ok(['stop', 'length'].includes(last.finish_reason), JSON.stringify(last));
  assert.ok(last.usage.completion_tokens > 0 && last.usage.completion_tokens <= 5);
  for (const model of ['local', 'tiny']) {
    const r = await chatStream({ messages, model, max_tokens: 2 });
    assert.ok(r.chunks.at(-1).usage.total_tokens > 0);
  }
  await assert.rejects(chatStream({ messages, model: 'no-such-model' }),
    (e) => e.code === grpc.status.NOT_FOUND && /no-such-model/.test(e.details));
});

test('grpc: a PeerId as the model forwards the chat to that peer', async () => {
  const peer = await startModelDaemon(['--remote-max-tokens', '8']);
  try {
    const hdr = { Authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
    const msgs = [{ role: 'user', content: 'Hello there' }];
    const direct = await (await fetch(`${peer.ready.rest}/v1/chat/completions`, {
      method: 'POST', headers: hdr, body: JSON.stringify({ messages: msgs, max_tokens: 6, temperature: 0 }),
    })).json();
    const res = await fetch(`${srv.ready.rest}/api/peers/connect`, {
      method: 'POST', headers: hdr, body: JSON.stringify({ multiaddr: peer.ready.p2p.split(',')[0] }),
    });
    assert.equal(res.status, 200, await res.text());
    const { chunks } = await chatStream({ messages: msgs, model: peer.ready.peer, max_tokens: 6, temperature: 0 });
    assert.equal(chunks.map((c) => c.text).join(''), direct.choices[0].message.content);
    assert.equal(chunks.at(-1).usage.completion_tokens, direct.usage.completion_tokens);
    // The peer's refusal (over its max_tokens cap) keeps its meaning: INVALID_ARGUMENT.
    await assert.rejects(chatStream({ messages: msgs, model: peer.ready.peer, max_tokens: 100 }),
      (e) => e.code === grpc.status.INVALID_ARGUMENT && /cap of 8/.test(e.details));
    // The model "swarm" with two experts (this node and the peer, both published): both
    // answer and this node's model writes the one answer that streams back.
    const sw = await chatStream({ messages: msgs, model: 'swarm', experts: 2, max_tokens: 6,
      temperature: 0 });
    assert.ok(['stop', 'length'].includes(sw.chunks.at(-1).finish_reason));
    assert.ok(sw.chunks.at(-1).usage.completion_tokens > 0);
    await assert.rejects(chatStream({ messages: msgs, model: 'swarm', experts: 9 }),
      (e) => e.code === grpc.status.INVALID_ARGUMENT && /experts/.test(e.details));
  } finally {
    peer.d.proc.kill('SIGTERM');
    await peer.d.exited;
    removeDir(peer.root);
  }
});

test('grpc: a full queue and the shared rate limit are RESOURCE_EXHAUSTED with retry after N ms', async () => {
  const lim = await startModelDaemon(['--parallel', '1', '--max-queue', '1', '--rate-limit-rpm', '6']);
  const c = new pkg.democritus.v1.Democritus(lim.ready.grpc, grpc.credentials.createInsecure());
  try {
    // One generating (long), one queued, the third refused.
    let a;
    const first = new Promise((res) => {
      a = chatStream(long, auth, {}, (call, chunks) => { if (chunks.length === 1) res(call); }, c);
      a.catch(() => {});
    });
    const callA = await first;
    const b = chatStream(long, auth, {}, () => {}, c);
    b.catch(() => {});
    await new Promise((r) => setTimeout(r, 200)); // B reaches the engine's queue
    await assert.rejects(chatStream({ messages, max_tokens: 2 }, auth, {}, () => {}, c),
      (e) => e.code === grpc.status.RESOURCE_EXHAUSTED && /retry after 1000 ms/.test(e.details));
    callA.cancel();
    await assert.rejects(a, (e) => e.code === grpc.status.CANCELLED);
    // B generates until the daemon stops. The key's bucket (6 a minute, shared with REST) has
    // 3 tokens left: spend them.
    let limited = null;
    for (let i = 0; i < 8 && !limited; i++) {
      try { await unary(c, 'Health', {}); } catch (e) { limited = e; }
    }
    assert.ok(limited, 'never rate limited');
    assert.equal(limited.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(limited.details, /Rate limit of 6 requests per minute.*retry after \d+ ms/);
    const res = await fetch(`${lim.ready.rest}/v1/models`, { headers: { Authorization: `Bearer ${KEY}` } });
    assert.equal(res.status, 429);
  } finally {
    c.close();
    lim.d.proc.kill('SIGTERM');
    await lim.d.exited;
    removeDir(lim.root);
  }
});

// Last: it stops the daemon.
test('grpc: SIGTERM ends open calls with UNAVAILABLE and the daemon exits cleanly', async () => {
  const t0 = Date.now();
  const ended = chatStream(long, auth, {}, (call, chunks) => {
    if (chunks.length === 1) srv.d.proc.kill('SIGTERM');
  });
  await assert.rejects(ended, (e) => e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.CANCELLED);
  const { code } = await srv.d.exited;
  assert.equal(code, 0, srv.d.stderr());
  assert.ok(Date.now() - t0 < 5000);
  removeDir(srv.root);
  srv = null;
});
