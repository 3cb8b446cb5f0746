// SPDX-License-Identifier: MIT
// The REST API through its real interface: a daemon on loopback, driven with Node's fetch and
// raw sockets. Without a model: health routes, auth, OpenAI error objects (404, 405, 413, 401,
// malformed JSON naming line and column, wrong types naming the field, n > 1), X-Request-Id,
// /metrics, a table of 30+ malformed requests (each answered, the server still serving after
// each) and a slow-loris client cut off by the timeout. With a tiny model made by gguf-gen:
// chat (plain and streamed), completions, embeddings, context_length_exceeded, 429 when the
// queue is full, and a client that disconnects mid-stream freeing its slot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import {
  startDaemon, tempDir, removeDir, loopbackFlags, parseReady, killAll, waitFor,
  tinyModel, GGUF_GEN,
} from './lib.mjs';


async function start(root, extra = []) {
  const models = join(root, 'models');
  mkdirSync(models, { recursive: true });
  const d = startDaemon([...loopbackFlags(join(root, 'state')), '--models-dir', models, ...extra],
    { timeout: 60000 });
  const ready = parseReady(await d.ready);
  assert.match(ready.rest, /^http:\/\/127\.0\.0\.1:\d+$/);
  return { d, url: ready.rest };
}

async function stop(d) {
  d.proc.kill('SIGTERM');
  const { code } = await d.exited;
  assert.equal(code, 0, `daemon exit code; stderr:\n${d.stderr()}`);
}

async function json(res) {
  const text = await res.text();
  try { return JSON.parse(text); } catch { throw new Error(`not JSON (${res.status}): ${text}`); }
}

// Checks an OpenAI error object and returns it.
async function expectError(res, status, re, param) {
  assert.equal(res.status, status, `status of ${res.url}`);
  assert.ok(res.headers.get('x-request-id'), 'X-Request-Id on an error');
  const body = await json(res);
  assert.ok(body.error, `error object: ${JSON.stringify(body)}`);
  for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in body.error, `error.${k}`);
  if (re) assert.match(body.error.message, re);
  if (param !== undefined) assert.equal(body.error.param, param);
  return body.error;
}

function post(url, path, body, headers = {}) {
  return fetch(url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

// Sends raw bytes on a fresh connection; resolves with everything the server sent before it
// closed (or before 'ms'), as a latin1 string.
function raw(url, bytes, ms = 5000) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const chunks = [];
    const s = connect(Number(port), hostname);
    const done = () => { clearTimeout(t); s.destroy(); resolve(Buffer.concat(chunks).toString('latin1')); };
    const t = setTimeout(done, ms);
    s.on('data', (c) => chunks.push(c));
    s.on('end', done);
    s.on('error', done);
    s.on('connect', () => { s.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'latin1')); });
  });
}

const statusOf = (resp) => Number((/^HTTP\/1\.[01] (\d{3})/.exec(resp) || [])[1] || 0);

test('rest: health, errors, request ids, metrics (no model)', async () => {
  const root = tempDir('dc-rest-');
  try {
    const { d, url } = await start(root);

    let res = await fetch(`${url}/health`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ok' });
    assert.match(res.headers.get('x-request-id'), /^[A-Za-z0-9._:-]+$/);

    res = await fetch(`${url}/api/health`);
    const h = await res.json();
    assert.equal(h.status, 'ok');
    assert.equal(h.model, null);
    assert.ok(Number.isInteger(h.active_requests) && Number.isInteger(h.queued_requests));
    assert.ok(Number.isInteger(h.memory.rss_bytes) && h.memory.rss_bytes > 0);
    assert.equal(typeof h.version, 'string');
    assert.ok(h.uptime_s >= 0);

    // The client's request id is echoed when it is plain; two generated ones differ.
    res = await fetch(`${url}/health`, { headers: { 'x-request-id': 'abc-123' } });
    assert.equal(res.headers.get('x-request-id'), 'abc-123');
    res = await fetch(`${url}/health`, { headers: { 'x-request-id': 'bad id\twith space' } });
    assert.notEqual(res.headers.get('x-request-id'), 'bad id\twith space');
    const ids = new Set();
    for (let i = 0; i < 5; i++) ids.add((await fetch(`${url}/health`)).headers.get('x-request-id'));
    assert.equal(ids.size, 5);

    // No model: only "swarm" is listed, and with no expert known it has no one to ask.
    assert.deepEqual((await (await fetch(`${url}/v1/models`)).json()).data.map((m) => m.id),
      ['swarm']);
    res = await fetch(`${url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({
      model: 'swarm', messages: [{ role: 'user', content: 'hi' }] }) });
    assert.equal(res.status, 503);
    assert.equal((await res.json()).error.code, 'no_expert');
    await expectError(await fetch(`${url}/nope`), 404, /Unknown path/);
    const e405 = await expectError(await fetch(`${url}/v1/models`, { method: 'DELETE' }), 405);
    assert.equal(e405.code, 'method_not_allowed');
    await expectError(await fetch(`${url}/v1/chat/completions`), 405);

    // Malformed JSON: line and column.
    await expectError(await post(url, '/v1/chat/completions', '{"messages": [\n  {"role": "user",, }\n]}'),
      400, /line 2, column \d+/);
    // Wrong types name the field.
    await expectError(await post(url, '/v1/chat/completions',
      { messages: [{ role: 'user', content: 'x' }], temperature: 'hot' }), 400, /temperature/, 'temperature');
    await expectError(await post(url, '/v1/chat/completions',
      { messages: [{ role: 'user', content: 'x' }], max_tokens: '5' }), 400, /max_tokens/, 'max_tokens');
    await expectError(await post(url, '/v1/chat/completions', { messages: 'hi' }), 400, /messages/, 'messages');
    // Refusals rather than silence.
    await expectError(await post(url, '/v1/chat/completions',
      { messages: [{ role: 'user', content: 'x' }], n: 2 }), 400, /not supported/, 'n');
    await expectError(await post(url, '/v1/chat/completions',
      { messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function' }] }), 400, /not supported/, 'tools');
    // Valid request, no model: 503.
    const e503 = await expectError(await post(url, '/v1/chat/completions',
      { messages: [{ role: 'user', content: 'x' }] }), 503);
    assert.equal(e503.code, 'model_not_loaded');
    await expectError(await post(url, '/v1/embeddings', { input: 'x' }), 503);

    // 413: announced by Content-Length and sent chunked.
    const big = JSON.stringify({ prompt: 'x'.repeat((1 << 20) + 10) });
    await expectError(await post(url, '/v1/completions', big), 413, /limit/);
    const chunked = await raw(url, 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n'
      + 'Content-Type: application/json\r\n\r\n'
      + `${(600000).toString(16)}\r\n${'a'.repeat(600000)}\r\n${(600000).toString(16)}\r\n${'a'.repeat(600000)}\r\n0\r\n\r\n`);
    assert.equal(statusOf(chunked), 413, chunked.slice(0, 200));

    // Metrics: Prometheus text with our counters.
    res = await fetch(`${url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/plain/);
    const m = await res.text();
    assert.match(m, /democritus_http_requests_total\{route="\/health",status="200"\} \d+/);
    assert.match(m, /democritus_http_requests_total\{route="\/v1\/chat\/completions",status="400"\} \d+/);
    assert.match(m, /democritus_http_request_duration_seconds_bucket\{route="\/health",le="\+Inf"\} \d+/);
    assert.match(m, /democritus_queue_depth \d+/);

    // One access-log line per request, never a key.
    await waitFor(() => /api: GET \/health 200 [\d.]+ms .*id=abc-123/.test(d.stderr()), 5000, 'access log');
    await stop(d);
  } finally {
    killAll();
    removeDir(root);
  }
});

test('rest: API keys (401, Bearer, /health open)', async () => {
  const root = tempDir('dc-rest-');
  try {
    const { d, url } = await start(root, ['--api-key', 'sk-test-one', '--api-key', 'sk-two']);
    assert.equal((await fetch(`${url}/health`)).status, 200);
    let e = await expectError(await fetch(`${url}/v1/models`), 401, /Missing API key/);
    assert.equal(e.code, 'invalid_api_key');
    e = await expectError(await fetch(`${url}/v1/models`, { headers: { authorization: 'Bearer sk-wrong' } }), 401, /Incorrect/);
    await expectError(await fetch(`${url}/api/health`, { headers: { authorization: 'Basic c2s=' } }), 401);
    // Auth comes before validation: a bad body from an unknown client is still a 401.
    await expectError(await post(url, '/v1/chat/completions', '{bad'), 401);
    const ok = await fetch(`${url}/v1/models`, { headers: { authorization: 'Bearer sk-two' } });
    assert.equal(ok.status, 200);
    await ok.text();
    await waitFor(() => /GET \/v1\/models 200 .* key=key-[0-9a-f]{8}/.test(d.stderr()), 5000, 'key id in log');
    assert.ok(!d.stderr().includes('sk-two') && !d.stderr().includes('sk-test-one'), 'keys never logged');
    await stop(d);
  } finally {
    killAll();
    removeDir(root);
  }
});

// Each entry: [name, raw request bytes, acceptable statuses (0 = the server closed without one)].
const J = (path, body, extra = '') => `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n`
  + `Content-Length: ${Buffer.byteLength(body, 'latin1')}\r\nConnection: close\r\n${extra}\r\n${body}`;
const CHAT = '/v1/chat/completions';
const BAD = [
  ['truncated JSON', J(CHAT, '{"messages":['), [400]],
  ['JSON array body', J(CHAT, '[1,2,3]'), [400]],
  ['JSON string body', J(CHAT, '"hi"'), [400]],
  ['empty body', J(CHAT, ''), [400]],
  ['trailing garbage', J(CHAT, '{"messages":[]} xyz'), [400]],
  ['bad UTF-8 in JSON', J(CHAT, '{"messages":[{"role":"user","content":"\xff\xfe"}]}'), [400]],
  ['overlong UTF-8', J(CHAT, '{"messages":[{"role":"user","content":"\xc0\xaf"}]}'), [400]],
  ['NUL escape', J(CHAT, '{"messages":[{"role":"user","content":"a\\u0000b"}]}'), [400]],
  ['lone surrogate escape', J(CHAT, '{"messages":[{"role":"user","content":"\\ud800"}]}'), [400]],
  ['deep nesting', J(CHAT, `${'['.repeat(5000)}${']'.repeat(5000)}`), [400]],
  ['messages not array', J(CHAT, '{"messages":{"role":"user"}}'), [400]],
  ['message not object', J(CHAT, '{"messages":["hi"]}'), [400]],
  ['role missing', J(CHAT, '{"messages":[{"content":"hi"}]}'), [400]],
  ['bad role', J(CHAT, '{"messages":[{"role":"root","content":"hi"}]}'), [400]],
  ['content number', J(CHAT, '{"messages":[{"role":"user","content":1}]}'), [400]],
  ['image part', J(CHAT, '{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}'), [400]],
  ['temperature string', J(CHAT, '{"messages":[{"role":"user","content":"x"}],"temperature":"1"}'), [400]],
  ['temperature NaN-ish', J(CHAT, '{"messages":[{"role":"user","content":"x"}],"temperature":1e999}'), [400]],
  ['top_p > 1', J(CHAT, '{"messages":[{"role":"user","content":"x"}],"top_p":2}'), [400]],
  ['max_tokens negative', J(CHAT, '{"messages":[{"role":"user","content":"x"}],"max_tokens":-1}'), [400]],
  ['max_tokens huge', J(CHAT, '{"messages":[{"role":"user","content":"x"}],"max_tokens":99999999999}'), [400]],
  ['stop too many', J(CHAT, `{"messages":[{"role":"user","content":"x"}],"stop":${JSON.stringify(Array(9).fill('s'))}}`), [400]],
  ['stop wrong type', J(CHAT, '{"messages":[{"role":"user","content":"x"}],"stop":{}}'), [400]],
  ['n = 3', J(CHAT, '{"messages":[{"role":"user","content":"x"}],"n":3}'), [400]],
  ['tools', J(CHAT, '{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}'), [400]],
  ['logprobs string', J(CHAT, '{"messages":[{"role":"user","content":"x"}],"logprobs":"yes"}'), [400]],
  ['top_logprobs 50', J(CHAT, '{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":50}'), [400]],
  ['completion no prompt', J('/v1/completions', '{"max_tokens":3}'), [400]],
  ['completion echo', J('/v1/completions', '{"prompt":"x","echo":true}'), [400]],
  ['embeddings no input', J('/v1/embeddings', '{}'), [400]],
  ['embeddings tokens', J('/v1/embeddings', '{"input":[[1,2]]}'), [400]],
  ['unknown path', 'GET /v2/anything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', [404]],
  ['wrong method', 'PUT /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n', [405]],
  ['unknown method', 'BREW /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', [405, 400, 501]],
  ['huge header', `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(100000)}\r\nConnection: close\r\n\r\n`, [431, 413, 400, 0]],
  ['many headers', `GET /health HTTP/1.1\r\nHost: x\r\n${'X-H: v\r\n'.repeat(8000)}Connection: close\r\n\r\n`, [431, 413, 400, 0]],
  ['huge URL', `GET /${'a'.repeat(100000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, [414, 431, 413, 400, 0]],
  ['garbage request line', 'HELLO\r\n\r\n', [400, 0]],
  ['binary junk', Buffer.from([0, 1, 2, 3, 255, 254, 13, 10, 13, 10]), [400, 0]],
  ['HTTP/1.1 without Host', 'GET /health HTTP/1.1\r\nConnection: close\r\n\r\n', [400]],
  ['bad chunk size', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n', [400, 0]],
  ['Content-Length over limit', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{', [413]],
  ['bad Content-Length', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}', [400, 413, 0]],
];

test(`rest: ${BAD.length} malformed requests, each answered, the server keeps serving`, async () => {
  assert.ok(BAD.length >= 30);
  const root = tempDir('dc-rest-');
  try {
    const { d, url } = await start(root);
    for (const [name, bytes, want] of BAD) {
      const resp = await raw(url, bytes);
      const st = statusOf(resp);
      assert.ok(want.includes(st), `${name}: got ${st || 'no response'}, want ${want}: ${resp.slice(0, 300)}`);
      if (st >= 400 && st !== 431 && st !== 414 && want[0] !== 0 && !/^(HELLO|garbage|binary)/.test(name)
          && resp.includes('application/json')) {
        const body = JSON.parse(resp.slice(resp.indexOf('\r\n\r\n') + 4));
        assert.ok(body.error && body.error.message, `${name}: error object`);
      }
      const h = await fetch(`${url}/health`);
      assert.equal(h.status, 200, `still serving after '${name}'`);
      await h.text();
    }
    await stop(d);
  } finally {
    killAll();
    removeDir(root);
  }
});

test('rest: headers over 16 KiB get our 431 (X-Request-Id, JSON); only what overflows the pool gets libmicrohttpd\'s', async () => {
  const root = tempDir('dc-rest-');
  try {
    const { d, url } = await start(root);
    const ours = await raw(url, `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Request-Id: big-1\r\nX-Big: ${'a'.repeat(20000)}\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(ours), 431, ours.slice(0, 300));
    assert.match(ours, /\r\nX-Request-Id: big-1\r\n/i);
    const body = JSON.parse(ours.slice(ours.indexOf('\r\n\r\n') + 4));
    assert.equal(body.error.code, 'request_header_fields_too_large');
    // The same through a query string.
    const q = await raw(url, `GET /v1/models?x=${'a'.repeat(20000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(q), 431);
    assert.match(q, /\r\nX-Request-Id: req-/i);
    // Beyond the 40 KiB pool libmicrohttpd answers before our handler runs: no X-Request-Id
    // (the documented exception).
    const mhd = await raw(url, `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(100000)}\r\nConnection: close\r\n\r\n`);
    assert.equal(statusOf(mhd), 431);
    assert.doesNotMatch(mhd, /X-Request-Id/i);
    const h = await fetch(`${url}/health`);
    assert.equal(h.status, 200);
    await stop(d);
  } finally {
    killAll();
    removeDir(root);
  }
});

test('rest: slow-loris clients are cut off by the timeouts; others are served meanwhile', async () => {
  const root = tempDir('dc-rest-');
  try {
    const { d, url } = await start(root, ['--api-timeout', '2']);
    const { port } = new URL(url);
    const t0 = Date.now();
    const closed = new Promise((resolve) => {
      const s = connect(Number(port), '127.0.0.1');
      let n = 0;
      let timer = null;
      s.on('connect', () => {
        s.write('GET /health HTTP/1.1\r\nHost: x\r\n');
        // One header byte every 300 ms: never idle long enough for the 2 s inactivity timeout,
        // so only the header deadline (2 s from the first byte) can end it.
        timer = setInterval(() => { if (!s.destroyed) s.write(n++ % 2 ? 'a' : 'X'); }, 300);
      });
      const end = () => { clearInterval(timer); resolve(Date.now() - t0); };
      s.on('close', end);
      s.on('error', () => {});
    });
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`${url}/health`);
      assert.equal(r.status, 200);
      await r.text();
    }
    const ms = await closed;
    assert.ok(ms >= 1500 && ms < 6000, `drip-feeding client closed after ${ms} ms`);

    // A client that connects and says nothing is closed by the same deadline.
    const t1 = Date.now();
    const silent = await raw(url, '', 10000);
    assert.equal(silent, '');
    const ms2 = Date.now() - t1;
    assert.ok(ms2 >= 1500 && ms2 < 6000, `silent client closed after ${ms2} ms`);
    await stop(d);
  } finally {
    killAll();
    removeDir(root);
  }
});

// ---- with a real (tiny) model ----

async function readSSE(res) {
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  const text = await res.text();
  const events = text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  return events;
}

async function health(url) {
  return (await fetch(`${url}/api/health`)).json();
}

const haveModel = GGUF_GEN && existsSync(GGUF_GEN);

test('rest: chat, streaming, completions, embeddings on a tiny model', { skip: !haveModel && 'no gguf-gen' }, async () => {
  const root = tempDir('dc-rest-');
  try {
    mkdirSync(join(root, 'models'), { recursive: true });
    tinyModel(join(root, 'models'));
    const { d, url } = await start(root, ['--parallel', '2', '--max-context', '1024']);
    const h = await health(url);
    assert.equal(h.model.id, 'tiny');
    assert.match(h.model.sha256, /^[0-9a-f]{64}$/);

    const models = await (await fetch(`${url}/v1/models`)).json();
    assert.deepEqual(models.data.map((m) => m.id).sort(), ['local', 'swarm', 'tiny']);

    // Plain chat.
    let res = await post(url, '/v1/chat/completions', {
      model: 'tiny', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello' }],
      max_tokens: 8, temperature: 0, seed: 1, logprobs: true, top_logprobs: 2,
    });
    assert.equal(res.status, 200);
    const c = await res.json();
    assert.equal(c.object, 'chat.completion');
    assert.equal(c.choices[0].message.role, 'assistant');
    assert.equal(typeof c.choices[0].message.content, 'string');
    assert.ok(['stop', 'length'].includes(c.choices[0].finish_reason));
    assert.ok(c.usage.prompt_tokens > 0);
    assert.ok(c.usage.completion_tokens > 0 && c.usage.completion_tokens <= 8);
    assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + c.usage.completion_tokens);
    // The engine's own times ride along (llama-server's "timings" idea): prompt and generation
    // took time, the queue (an idle server) next to none.
    assert.ok(c.timings.prompt_ms > 0 && c.timings.generation_ms >= 0 && c.timings.queue_ms >= 0,
      JSON.stringify(c.timings));
    assert.ok(c.choices[0].logprobs.content.length > 0);
    assert.equal(c.choices[0].logprobs.content[0].top_logprobs.length, 2);
    if (c.usage.completion_tokens === 8) assert.equal(c.choices[0].finish_reason, 'length');

    // Greedy is deterministic; the stream carries the same text.
    const body = { messages: [{ role: 'user', content: 'count' }], max_tokens: 6, temperature: 0 };
    const plain = await (await post(url, '/v1/chat/completions', body)).json();
    const events = await readSSE(await post(url, '/v1/chat/completions',
      { ...body, stream: true, stream_options: { include_usage: true } }));
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    assert.ok(chunks.every((k) => k.object === 'chat.completion.chunk'));
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const text = chunks.filter((k) => k.choices.length).map((k) => k.choices[0].delta.content ?? '').join('');
    assert.equal(text, plain.choices[0].message.content);
    const fin = chunks.filter((k) => k.choices.length && k.choices[0].finish_reason);
    assert.equal(fin.length, 1);
    assert.deepEqual(chunks.at(-1).usage, plain.usage);
    assert.ok(chunks.at(-1).timings.prompt_ms > 0);

    // Legacy completions, plain and streamed.
    res = await post(url, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 5, temperature: 0 });
    const comp = await res.json();
    assert.equal(comp.object, 'text_completion');
    assert.equal(typeof comp.choices[0].text, 'string');
    assert.ok(comp.usage.completion_tokens <= 5);
    const cev = await readSSE(await post(url, '/v1/completions', { prompt: 'Once', max_tokens: 3, stream: true }));
    assert.equal(cev.at(-1), '[DONE]');
    assert.equal(JSON.parse(cev[0]).object, 'text_completion');

    // Embeddings: float and base64 agree.
    res = await post(url, '/v1/embeddings', { input: ['hello world', 'x'] });
    const emb = await res.json();
    assert.equal(emb.data.length, 2);
    const v = emb.data[0].embedding;
    assert.ok(v.length > 0);
    const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    assert.ok(Math.abs(norm - 1) < 1e-3, `L2 norm ${norm}`);
    const b64 = await (await post(url, '/v1/embeddings', { input: 'hello world', encoding_format: 'base64' })).json();
    const buf = Buffer.from(b64.data[0].embedding, 'base64');
    const f = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
    assert.equal(f.length, v.length);
    assert.ok(Math.abs(f[0] - v[0]) < 1e-5);

    // Errors that need the model.
    let e = await expectError(await post(url, '/v1/chat/completions',
      { messages: [{ role: 'user', content: 'hi' }], max_tokens: 100000 }), 400, /context length/);
    assert.equal(e.code, 'context_length_exceeded');
    e = await expectError(await post(url, '/v1/completions',
      { prompt: 'word '.repeat(3000), max_tokens: 1 }), 400);
    assert.equal(e.code, 'context_length_exceeded');
    e = await expectError(await post(url, '/v1/chat/completions',
      { model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }), 404);
    assert.equal(e.code, 'model_not_found');

    // A client gone mid-stream: its generation is cancelled and the slot freed.
    const ac = new AbortController();
    res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST', signal: ac.signal, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        messages: [{ role: 'user', content: 'go' }], max_tokens: 900, temperature: 0, stream: true,
      }),
    });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    await reader.read();
    assert.equal((await health(url)).active_requests, 1);
    const t0 = Date.now();
    ac.abort();
    for (;;) {
      const hh = await health(url);
      if (hh.active_requests === 0 && hh.queued_requests === 0) break;
      assert.ok(Date.now() - t0 < 2000, 'slot freed after disconnect');
      await new Promise((r) => setTimeout(r, 10));
    }
    await waitFor(() => /client gone, cancelled/.test(d.stderr()), 5000, 'cancel logged');

    // The same for a plain (non-streaming) request: its connection is suspended while it waits,
    // and the hang-up watcher cancels it.
    const ac2 = new AbortController();
    const pending = fetch(`${url}/v1/chat/completions`, {
      method: 'POST', signal: ac2.signal, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'go' }], max_tokens: 900, temperature: 0 }),
    }).catch(() => null);
    const t1 = Date.now();
    while ((await health(url)).active_requests === 0) {
      assert.ok(Date.now() - t1 < 5000, 'plain request started');
    }
    ac2.abort();
    await pending;
    const t2 = Date.now();
    while ((await health(url)).active_requests !== 0) {
      assert.ok(Date.now() - t2 < 2000, 'slot freed after a plain request was abandoned');
      await new Promise((r) => setTimeout(r, 10));
    }
    const m = await (await fetch(`${url}/metrics`)).text();
    assert.match(m, /democritus_tokens_total\{kind="completion"\} [1-9]\d*/);
    await stop(d);
  } finally {
    killAll();
    removeDir(root);
  }
});

test('rest: a full queue answers 429 with Retry-After', { skip: !haveModel && 'no gguf-gen' }, async () => {
  const root = tempDir('dc-rest-');
  try {
    mkdirSync(join(root, 'models'), { recursive: true });
    tinyModel(join(root, 'models'));
    const { d, url } = await start(root, ['--parallel', '1', '--max-queue', '1', '--max-context', '512']);
    const req = () => post(url, '/v1/completions', { prompt: 'a', max_tokens: 400, temperature: 1 });
    const all = await Promise.all(Array.from({ length: 6 }, req));
    const statuses = all.map((r) => r.status);
    assert.ok(statuses.filter((s) => s === 200).length >= 2, `statuses ${statuses}`);
    const limited = all.filter((r) => r.status === 429);
    assert.ok(limited.length >= 1, `statuses ${statuses}`);
    assert.equal(limited[0].headers.get('retry-after'), '1');
    const e = await limited[0].json();
    assert.equal(e.error.code, 'queue_full');
    await Promise.all(all.map((r) => r.text().catch(() => '')));
    await stop(d);
  } finally {
    killAll();
    removeDir(root);
  }
});

test('rest: a priority key\'s request leaves the queue before an earlier one of another key', { skip: !haveModel && 'no gguf-gen' }, async () => {
  const root = tempDir('dc-rest-');
  try {
    mkdirSync(join(root, 'models'), { recursive: true });
    tinyModel(join(root, 'models'));
    const { d, url } = await start(root, ['--parallel', '1', '--max-queue', '4', '--max-context', '512',
      '--api-key', 'sk-plain', '--priority-api-key', 'sk-first']);
    const auth = (k) => ({ authorization: `Bearer ${k}` });
    const until = async (what, pred) => {
      const end = Date.now() + 20000;
      for (;;) {
        const h = await json(await fetch(`${url}/api/health`, { headers: auth('sk-plain') }));
        if (pred(h)) return;
        assert.ok(Date.now() < end, `timed out waiting for ${what}: ${JSON.stringify(h)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    // A holds the only slot (greedy from "b" runs to max_tokens on this model); B (plain key)
    // queues first, C (priority key) after it.
    const a = post(url, '/v1/completions', { prompt: 'b', max_tokens: 500, temperature: 0 }, auth('sk-plain'));
    await until('A generating', (h) => h.active_requests === 1);
    const order = [];
    // 64 greedy tokens each (these prompts do not reach end-of-text that soon on this model), so
    // the one served second ends 64 generated tokens after the other: the order the client
    // sees cannot be swapped by response delivery.
    const later = (prompt, key, name) => post(url, '/v1/completions', { prompt, max_tokens: 64, temperature: 0 }, auth(key))
      .then(async (r) => { await r.text(); order.push(name); return r.status; });
    const b = later('c', 'sk-plain', 'B');
    await until('B queued', (h) => h.queued_requests === 1);
    const c = later('x', 'sk-first', 'C');
    await until('C queued', (h) => h.queued_requests === 2);
    const ra = await a;
    assert.equal(ra.status, 200);
    assert.equal((await ra.json()).choices[0].finish_reason, 'length', 'A held the slot to the end');
    assert.deepEqual([await b, await c], [200, 200]);
    assert.deepEqual(order, ['C', 'B'], 'the priority key went first');
    await stop(d);
  } finally {
    killAll();
    removeDir(root);
  }
});
