// SPDX-License-Identifier: MIT
// Chat completions forwarded to a peer: POST /v1/chat/completions with model "<PeerId>" on
// daemon A goes over /democritus/infer/1.0.0 to daemon B, whose verified tokens come back in
// OpenAI's shapes (plain and streamed), and `democritus ask --peer` prints B's answer. A and B
// serve different gguf-gen models (seeds 1 and 2), so B's greedy answer is told from A's. B's
// refusals map to OpenAI errors: 403 (serve_remote = false), 400 (over its max_tokens cap),
// 429 (its per-peer request quota); a PeerId we are not connected to is 502 peer_unreachable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  startDaemon, tempDir, removeDir, loopbackFlags, parseReady, killAll, run,
  tinyModel, GGUF_GEN,
} from './lib.mjs';

const skip = (!GGUF_GEN || !existsSync(GGUF_GEN)) && 'no gguf-gen';

async function start(root, name, model, extra = []) {
  const state = join(root, name);
  const d = startDaemon([...loopbackFlags(state), '--models-dir', join(root, 'none'),
    '--model', model, '--temperature', '0', ...extra], { timeout: 60000 });
  const ready = parseReady(await d.ready);
  return { d, state, url: ready.rest, p2p: ready.p2p.split(',')[0], peer: ready.peer };
}

async function stop(n) {
  n.d.proc.kill('SIGTERM');
  const { code } = await n.d.exited;
  assert.equal(code, 0, `daemon exit code; stderr:\n${n.d.stderr()}`);
}

const MESSAGES = [{ role: 'user', content: 'Hello there' }];

async function chat(url, body, signal) {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    signal,
  });
}

// Reads a whole SSE response into its data payloads (the final "[DONE]" included).
async function sse(res) {
  const text = await res.text();
  return text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
}

async function connect(a, b) {
  const res = await fetch(`${a.url}/api/peers/connect`,
    { method: 'POST', body: JSON.stringify({ multiaddr: b.p2p }) });
  assert.equal(res.status, 200, await res.text());
}

test('remote chat: model "<PeerId>" answers with the peer\'s model, plain and streamed',
  { skip, timeout: 180000 }, async () => {
    const root = tempDir('dc-remote-');
    try {
      const a = await start(root, 'a', tinyModel(root, 1, 'tiny-1.gguf'));
      const b = await start(root, 'b', tinyModel(root, 2, 'tiny-2.gguf'),
        ['--remote-max-tokens', '32', '--remote-requests-per-minute', '6']);

      // B's greedy answer, asked directly; and A's own, which differs (another model).
      const direct = await (await chat(b.url,
        { messages: MESSAGES, max_tokens: 8, temperature: 0 })).json();
      const expect = direct.choices[0].message.content;
      assert.ok(expect.length > 0);
      const own = await (await chat(a.url,
        { messages: MESSAGES, max_tokens: 8, temperature: 0 })).json();
      assert.notEqual(own.choices[0].message.content, expect, 'the two models differ');

      // Not connected, no address known: 502 peer_unreachable, nothing sent to B.
      let res = await chat(a.url, { model: b.peer, messages: MESSAGES, max_tokens: 8 });
      assert.equal(res.status, 502);
      let e = (await res.json()).error;
      assert.equal(e.code, 'peer_unreachable');
      assert.match(e.message, /Not connected to peer/);

      // `ask --peer` connects and prints B's answer (A's default temperature is 0). [B: 1]
      const r = run(['ask', 'Hello there', '--peer', b.p2p, '--max-tokens', '8',
        '--state-dir', a.state]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, `${expect}\n`);

      // Plain REST through A: the chat.completion of B's tokens with InferDone's usage. [B: 2]
      res = await chat(a.url, { model: b.peer, messages: MESSAGES, max_tokens: 8, temperature: 0 });
      assert.equal(res.status, 200);
      const plain = await res.json();
      assert.equal(plain.object, 'chat.completion');
      assert.equal(plain.model, b.peer);
      assert.equal(plain.choices[0].message.role, 'assistant');
      assert.equal(plain.choices[0].message.content, expect);
      assert.equal(plain.choices[0].finish_reason, direct.choices[0].finish_reason);
      assert.deepEqual(plain.usage, direct.usage);

      // Streamed through A: chunks whose deltas make the same text, then usage and [DONE]. [B: 3]
      res = await chat(a.url, {
        model: b.peer, messages: MESSAGES, max_tokens: 8, temperature: 0, stream: true,
        stream_options: { include_usage: true },
      });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type'), /^text\/event-stream/);
      const events = await sse(res);
      assert.equal(events.at(-1), '[DONE]');
      const chunks = events.slice(0, -1).map((x) => JSON.parse(x));
      for (const c of chunks) {
        assert.equal(c.object, 'chat.completion.chunk');
        assert.equal(c.model, b.peer);
      }
      assert.equal(chunks[0].choices[0].delta.role, 'assistant');
      const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
      assert.equal(text, expect);
      const fin = chunks.filter((c) => c.choices[0]?.finish_reason);
      assert.equal(fin.length, 1);
      assert.equal(fin[0].choices[0].finish_reason, direct.choices[0].finish_reason);
      assert.deepEqual(chunks.at(-1).usage, direct.usage);

      // A client that leaves mid-stream: A cancels the call; the next request still works. [B: 4]
      const ac = new AbortController();
      res = await chat(a.url, { model: b.peer, messages: MESSAGES, max_tokens: 32, stream: true },
        ac.signal);
      ac.abort();
      res = await chat(a.url, { model: b.peer, messages: MESSAGES, max_tokens: 4, temperature: 0 });
      assert.equal(res.status, 200); // [B: 5]
      assert.equal((await res.json()).model, b.peer);

      // B's cap on max_tokens: 400 context_length_exceeded with B's reason. [B: 6]
      res = await chat(a.url, { model: b.peer, messages: MESSAGES, max_tokens: 100 });
      assert.equal(res.status, 400);
      e = (await res.json()).error;
      assert.equal(e.code, 'context_length_exceeded');
      assert.match(e.message, /max_tokens 100 exceeds this node's cap of 32/);

      // B's request quota (6 a minute) is spent: 429 with a Retry-After, plain and streamed.
      for (const stream of [false, true]) {
        res = await chat(a.url, { model: b.peer, messages: MESSAGES, max_tokens: 4, stream });
        assert.equal(res.status, 429);
        assert.ok(Number(res.headers.get('retry-after')) >= 1);
        e = (await res.json()).error;
        assert.equal(e.type, 'rate_limit_error');
        assert.equal(e.code, 'peer_rate_limited');
        assert.match(e.message, /request quota exhausted/);
      }

      // What cannot be forwarded is refused at A.
      res = await fetch(`${a.url}/v1/completions`, {
        method: 'POST', body: JSON.stringify({ model: b.peer, prompt: 'Hi', max_tokens: 2 }),
      });
      assert.equal(res.status, 400);
      assert.equal((await res.json()).error.code, 'model_not_supported');
      res = await chat(a.url, { model: a.peer, messages: MESSAGES, max_tokens: 2 });
      assert.equal(res.status, 400);
      assert.match((await res.json()).error.message, /this node's own PeerId/);
      // A model id that is not a PeerId is still a registry lookup.
      res = await chat(a.url, { model: 'no-such-model', messages: MESSAGES, max_tokens: 2 });
      assert.equal(res.status, 404);
      assert.equal((await res.json()).error.code, 'model_not_found');

      await stop(b);
      await stop(a);
    } finally {
      killAll();
      removeDir(root);
    }
  });

test('remote chat: a peer that does not serve remote requests gives 403 peer_refused',
  { skip, timeout: 120000 }, async () => {
    const root = tempDir('dc-remote-refuse-');
    try {
      const model = tinyModel(root, 1, 'tiny-1.gguf');
      const a = await start(root, 'a', model);
      const c = await start(root, 'c', model, ['--serve-remote', 'false']);
      await connect(a, c);
      for (const stream of [false, true]) {
        const res = await chat(a.url, { model: c.peer, messages: MESSAGES, max_tokens: 4, stream });
        assert.equal(res.status, 403);
        const e = (await res.json()).error;
        assert.equal(e.type, 'permission_error');
        assert.equal(e.code, 'peer_refused');
        assert.match(e.message, /does not serve remote requests/);
      }
      const r = run(['ask', 'Hello', '--peer', c.p2p, '--state-dir', a.state]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /^democritus ask: HTTP 403: Peer 12D3KooW\S+ refused the request/);
      assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);

      // Once C is gone, A's peerstore still has its address: the dial fails, 502.
      await stop(c);
      const res = await chat(a.url, { model: c.peer, messages: MESSAGES, max_tokens: 4 });
      assert.equal(res.status, 502);
      assert.equal((await res.json()).error.code, 'peer_unreachable');
      await stop(a);
    } finally {
      killAll();
      removeDir(root);
    }
  });
