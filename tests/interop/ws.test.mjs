// SPDX-License-Identifier: MIT
// The WebSocket interface (/ws/chat) driven by the `ws` npm client: streamed tokens and done
// with usage, several requests on one socket, cancel, errors that keep the socket open, auth by
// header (401 before the upgrade) and by first message, ping/pong, and the close codes for
// invalid UTF-8 (1007), oversized messages (1009, at the configured ws_max_message_bytes) and
// failed auth (1008). Closing a socket cancels its generations (the engine's active_requests
// drops to 0). The model resolves as on REST: a second registry model loaded on demand, an
// unknown one an error naming it, a PeerId forwarded to that peer. A second daemon checks admission: a full model queue and the
// rate limit REST shares answer error messages with retry_after_ms, and the socket stays open.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { removeDir, killAll } from '../e2e/lib.mjs';
import { KEY, startModelDaemon, waitIdle } from './rpclib.mjs';

const LIMIT = 65536; // --ws-max-message-bytes

let srv;
let url;

before(async () => {
  srv = await startModelDaemon(['--ws-max-message-bytes', String(LIMIT)]);
  assert.match(srv.ready.ws, /^ws:\/\/127\.0\.0\.1:\d+$/);
  url = `${srv.ready.ws}/ws/chat`;
});

after(async () => {
  if (srv) {
    srv.d.proc.kill('SIGTERM');
    await srv.d.exited;
    removeDir(srv.root);
  }
  killAll();
});

// Opens a socket; resolves { ws, next(pred), all } where next() waits for the next message
// matching pred (messages are queued, so none is missed).
function open(headers = { Authorization: `Bearer ${KEY}` }, at = url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(at, { headers });
    const queue = [];
    const waiters = [];
    const all = [];
    ws.on('message', (data, isBinary) => {
      assert.equal(isBinary, false);
      const m = JSON.parse(data.toString('utf8'));
      all.push(m);
      const i = waiters.findIndex((w) => w.pred(m));
      if (i >= 0) waiters.splice(i, 1)[0].resolve(m);
      else queue.push(m);
    });
    const next = (pred = () => true, ms = 30000) => {
      const i = queue.findIndex(pred);
      if (i >= 0) return Promise.resolve(queue.splice(i, 1)[0]);
      return new Promise((res, rej) => {
        const w = { pred, resolve: (m) => { clearTimeout(w.t); res(m); } };
        w.t = setTimeout(() => rej(new Error(`no matching message in ${ms} ms; got ${JSON.stringify(all)}`)), ms);
        waiters.push(w);
      });
    };
    const closed = new Promise((res) => ws.on('close', (code, reason) => res({ code, reason: reason.toString() })));
    ws.on('open', () => resolve({ ws, next, all, closed }));
    ws.on('error', reject);
    ws.on('unexpected-response', (req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
  });
}

const chat = (id, extra = {}) => JSON.stringify({
  type: 'chat', id, messages: [{ role: 'user', content: 'Tell me a story.' }],
  temperature: 0, seed: 1, ...extra,
});

test('ws: chat streams tokens, then done with usage', async () => {
  const s = await open();
  s.ws.send(chat('one', { max_tokens: 12 }));
  const done = await s.next((m) => m.type === 'done' && m.id === 'one');
  const tokens = s.all.filter((m) => m.type === 'token' && m.id === 'one');
  assert.ok(['stop', 'length'].includes(done.finish_reason), JSON.stringify(done));
  assert.ok(done.usage.prompt_tokens > 0);
  assert.ok(done.usage.completion_tokens > 0 && done.usage.completion_tokens <= 12);
  assert.equal(done.usage.total_tokens, done.usage.prompt_tokens + done.usage.completion_tokens);
  assert.ok(tokens.length > 0 || done.finish_reason === 'stop');
  for (const t of tokens) assert.equal(typeof t.text, 'string');
  // done is the last message for its id
  assert.equal(s.all.filter((m) => m.id === 'one').at(-1).type, 'done');
  s.ws.close(1000);
  assert.equal((await s.closed).code, 1000);
});

test('ws: two requests in flight on one socket', async () => {
  const s = await open();
  s.ws.send(chat('a', { max_tokens: 10 }));
  s.ws.send(chat('b', { max_tokens: 6, messages: [{ role: 'user', content: 'Hi' }] }));
  const [a, b] = await Promise.all([
    s.next((m) => m.type === 'done' && m.id === 'a'),
    s.next((m) => m.type === 'done' && m.id === 'b'),
  ]);
  assert.ok(a.usage.completion_tokens <= 10 && b.usage.completion_tokens <= 6);
  s.ws.close();
});

test('ws: cancel ends with done "cancelled"', async () => {
  const s = await open();
  s.ws.send(chat('long'));
  await s.next((m) => m.type === 'token' && m.id === 'long');
  s.ws.send(JSON.stringify({ type: 'cancel', id: 'long' }));
  const done = await s.next((m) => m.type === 'done' && m.id === 'long');
  assert.equal(done.finish_reason, 'cancelled');
  // cancelling something not in flight is an error with that id; the socket stays usable
  s.ws.send(JSON.stringify({ type: 'cancel', id: 'long' }));
  const e = await s.next((m) => m.type === 'error');
  assert.equal(e.id, 'long');
  s.ws.close();
});

test('ws: bad input answers error messages and the socket stays open', async () => {
  const s = await open();
  s.ws.send('{"type": "chat", ');
  const e1 = await s.next((m) => m.type === 'error');
  assert.equal(e1.id, null);
  assert.match(e1.message, /JSON/);
  s.ws.send('[1,2]');
  assert.equal((await s.next((m) => m.type === 'error')).id, null);
  s.ws.send(JSON.stringify({ type: 'chat', id: 'x', messages: 'nope' }));
  const e3 = await s.next((m) => m.type === 'error');
  assert.equal(e3.id, 'x');
  assert.match(e3.message, /messages/);
  s.ws.send(JSON.stringify({ type: 'chat', id: 'y', messages: [{ role: 'user', content: 'q' }], temperature: 7 }));
  assert.match((await s.next((m) => m.type === 'error' && m.id === 'y')).message, /temperature/);
  s.ws.send(JSON.stringify({ type: 'chat', messages: [] }));
  assert.match((await s.next((m) => m.type === 'error')).message, /id/);
  s.ws.send(JSON.stringify({ type: 'bogus', id: 'z' }));
  assert.equal((await s.next((m) => m.type === 'error')).id, 'z');
  s.ws.send(chat('ok', { max_tokens: 3 }));
  assert.equal((await s.next((m) => m.type === 'done')).id, 'ok');
  // ping/pong
  const pong = new Promise((res) => s.ws.once('pong', (d) => res(d.toString())));
  s.ws.ping('hello');
  assert.equal(await pong, 'hello');
  s.ws.close();
});

test('ws: wrong key is refused with 401 before the upgrade', async () => {
  await assert.rejects(open({ Authorization: 'Bearer wrong' }), (e) => e.status === 401);
  await assert.rejects(open({ Authorization: 'Basic abc' }), (e) => e.status === 401);
});

test('ws: auth by first message', async () => {
  const s = await open({});
  s.ws.send(JSON.stringify({ type: 'auth', key: KEY }));
  assert.equal((await s.next()).type, 'auth_ok');
  s.ws.send(chat('m', { max_tokens: 3 }));
  assert.equal((await s.next((m) => m.type === 'done')).id, 'm');
  s.ws.close();

  const bad = await open({});
  bad.ws.send(JSON.stringify({ type: 'auth', key: 'wrong' }));
  assert.equal((await bad.next()).type, 'error');
  assert.equal((await bad.closed).code, 1008);

  const none = await open({});
  none.ws.send(chat('n'));
  assert.match((await none.next()).message, /authentication/);
  assert.equal((await none.closed).code, 1008);
});

test('ws: invalid UTF-8 closes with 1007', async () => {
  const s = await open();
  s.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
  assert.equal((await s.closed).code, 1007);
});

test('ws: a message over 1 MiB closes with 1009', async () => {
  const s = await open();
  s.ws.send('x'.repeat((1 << 20) + 10));
  assert.equal((await s.closed).code, 1009);
});

test('ws: the configured ws_max_message_bytes (64 KiB) is the limit', async () => {
  const s = await open();
  // Just under: answered (the prompt is far over the context), and the socket stays open.
  const under = chat('under', { max_tokens: 1, messages: [{ role: 'user', content: 'x'.repeat(LIMIT - 200) }] });
  assert.ok(under.length < LIMIT);
  s.ws.send(under);
  const e = await s.next((m) => m.id === 'under');
  assert.equal(e.type, 'error', JSON.stringify(e));
  // Just over: closed with 1009.
  s.ws.send('x'.repeat(LIMIT + 1));
  assert.equal((await s.closed).code, 1009);
});

test('ws: a non-default registry model is loaded on demand and answers', async () => {
  const s = await open();
  s.ws.send(chat('other', { model: 'other', max_tokens: 5 }));
  const done = await s.next((m) => m.id === 'other' && (m.type === 'done' || m.type === 'error'), 120000);
  assert.equal(done.type, 'done', JSON.stringify(done));
  assert.ok(done.usage.completion_tokens > 0 && done.usage.completion_tokens <= 5);
  // "local" and the default's own id are the default model.
  s.ws.send(chat('tiny', { model: 'tiny', max_tokens: 2 }));
  assert.equal((await s.next((m) => m.id === 'tiny' && m.type !== 'token')).type, 'done');
  s.ws.send(chat('local', { model: 'local', max_tokens: 2 }));
  assert.equal((await s.next((m) => m.id === 'local' && m.type !== 'token')).type, 'done');
  // "swarm" (with "experts") on a node that knows no other expert: its own model answers;
  // "experts" with another model is an error naming the field.
  s.ws.send(chat('swarm', { model: 'swarm', experts: 2, max_tokens: 2 }));
  const sw = await s.next((m) => m.id === 'swarm' && m.type !== 'token');
  assert.equal(sw.type, 'done', JSON.stringify(sw));
  assert.ok(sw.usage.completion_tokens > 0);
  s.ws.send(chat('bad-experts', { model: 'local', experts: 2 }));
  const be = await s.next((m) => m.id === 'bad-experts');
  assert.equal(be.type, 'error');
  assert.match(be.message, /experts/);
  s.ws.close();
});

test('ws: an unknown model is an error naming it; the socket stays open', async () => {
  const s = await open();
  s.ws.send(chat('nope', { model: 'no-such-model' }));
  const e = await s.next((m) => m.id === 'nope');
  assert.equal(e.type, 'error');
  assert.equal(e.code, 'model_not_found');
  assert.match(e.message, /no-such-model/);
  s.ws.send(chat('after', { max_tokens: 2 }));
  assert.equal((await s.next((m) => m.id === 'after' && m.type !== 'token')).type, 'done');
  s.ws.close();
});

test('ws: a full queue and the shared rate limit answer errors with retry_after_ms', async () => {
  // One slot, one queued request, 6 requests a minute per key across REST, WS and gRPC.
  const lim = await startModelDaemon(['--parallel', '1', '--max-queue', '1', '--rate-limit-rpm', '6']);
  try {
    const s = await open(undefined, `${lim.ready.ws}/ws/chat`);
    s.ws.send(chat('q1')); // generates (no max_tokens: long)
    await s.next((m) => m.type === 'token' && m.id === 'q1');
    s.ws.send(chat('q2')); // waits in the queue
    s.ws.send(chat('q3', { max_tokens: 2 })); // the queue is full
    const full = await s.next((m) => m.id === 'q3');
    assert.equal(full.type, 'error', JSON.stringify(full));
    assert.equal(full.code, 'queue_full');
    assert.equal(full.retry_after_ms, 1000);
    assert.match(full.message, /retry after 1000 ms/);
    s.ws.send(JSON.stringify({ type: 'cancel', id: 'q1' }));
    s.ws.send(JSON.stringify({ type: 'cancel', id: 'q2' }));
    await s.next((m) => m.type === 'done' && m.id === 'q1');
    await s.next((m) => m.type === 'done' && m.id === 'q2');
    // Three chats so far took three of the key's 6 tokens; spend the rest.
    let limited = null;
    for (let i = 0; i < 8 && !limited; i++) {
      s.ws.send(chat(`r${i}`, { max_tokens: 1 }));
      const m = await s.next((x) => x.id === `r${i}` && x.type !== 'token');
      if (m.type === 'error') limited = m;
    }
    assert.ok(limited, 'never rate limited');
    assert.equal(limited.code, 'rate_limit_exceeded');
    assert.match(limited.message, /Rate limit of 6 requests per minute/);
    assert.ok(limited.retry_after_ms > 0 && limited.retry_after_ms <= 10000, JSON.stringify(limited));
    // The socket stays open, and REST sees the same empty bucket.
    s.ws.send(JSON.stringify({ type: 'cancel', id: 'none' }));
    assert.equal((await s.next((m) => m.id === 'none')).type, 'error');
    const res = await fetch(`${lim.ready.rest}/v1/models`, { headers: { Authorization: `Bearer ${KEY}` } });
    assert.equal(res.status, 429);
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
    s.ws.close();
  } finally {
    lim.d.proc.kill('SIGTERM');
    await lim.d.exited;
    removeDir(lim.root);
  }
});

test('ws: a PeerId as the model forwards the chat to that peer', async () => {
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
    const s = await open();
    s.ws.send(chat('fwd', { model: peer.ready.peer, messages: msgs, max_tokens: 6, temperature: 0 }));
    const done = await s.next((m) => m.id === 'fwd' && m.type !== 'token');
    assert.equal(done.type, 'done', JSON.stringify(done));
    const text = s.all.filter((m) => m.id === 'fwd' && m.type === 'token').map((m) => m.text).join('');
    assert.equal(text, direct.choices[0].message.content);
    assert.equal(done.usage.completion_tokens, direct.usage.completion_tokens);
    // The peer's refusal is an error with its code; the socket stays open.
    s.ws.send(chat('cap', { model: peer.ready.peer, max_tokens: 100 }));
    const e = await s.next((m) => m.id === 'cap');
    assert.equal(e.type, 'error', JSON.stringify(e));
    assert.equal(e.code, 'context_length_exceeded');
    s.ws.send(chat('after', { max_tokens: 2 }));
    assert.equal((await s.next((m) => m.id === 'after' && m.type !== 'token')).type, 'done');
    s.ws.close();
  } finally {
    peer.d.proc.kill('SIGTERM');
    await peer.d.exited;
    removeDir(peer.root);
  }
});

test('ws: binary messages close with 1003', async () => {
  const s = await open();
  s.ws.send(Buffer.from([1, 2, 3]), { binary: true });
  assert.equal((await s.closed).code, 1003);
});

test('ws: closing the socket cancels its generations', async () => {
  const s = await open();
  s.ws.send(chat('g1'));
  s.ws.send(chat('g2'));
  await s.next((m) => m.type === 'token');
  s.ws.terminate();
  const ms = await waitIdle(srv.ready);
  if (ms !== null) {
    console.log(`# slot freed ${ms} ms after the socket was closed`);
    assert.ok(ms < 1000, `engine still busy ${ms} ms after close`);
  }
});

test('ws: logprobs: true adds each token\'s logprob', async () => {
  const s = await open();
  s.ws.send(chat('lp', { max_tokens: 4, logprobs: true }));
  await s.next((m) => m.type === 'done' && m.id === 'lp');
  const toks = s.all.filter((m) => m.type === 'token');
  assert.ok(toks.length > 0);
  for (const t of toks) assert.ok(typeof t.logprob === 'number' && t.logprob <= 0, JSON.stringify(t));
  s.ws.close();
});

// Last: it stops the daemon.
test('ws: SIGTERM closes sockets with 1001 and the daemon exits cleanly mid-stream', async () => {
  const s = await open();
  s.ws.send(chat('bye'));
  await s.next((m) => m.type === 'token' && m.id === 'bye');
  const t0 = Date.now();
  srv.d.proc.kill('SIGTERM');
  const [closed, exited] = await Promise.all([s.closed, srv.d.exited]);
  assert.equal(closed.code, 1001);
  assert.equal(exited.code, 0, srv.d.stderr());
  assert.ok(Date.now() - t0 < 5000);
  removeDir(srv.root);
  srv = null;
});
