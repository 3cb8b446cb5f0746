// SPDX-License-Identifier: MIT
// The model "swarm": three daemons, each a different gguf-gen model (seeds 1-3) with its own
// [expert] description — code (A), poetry (B), mathematics (C) — publish signed capability
// records on the DHT. Chats sent to C with model "swarm" are routed by the similarity of the
// prompt to those descriptions: with one expert its tokens stream through unchanged, so the
// answer must equal that expert's own greedy answer; with two, C's model writes one answer from
// both (Mixture-of-Agents); a stopped expert is replaced by the next candidate (failover), and
// one that dies mid-stream is continued by the next (a third test); an expert that failed is
// ranked last for a while, until it connects again;
// `democritus ask --experts N` takes the same path; GET /api/experts and `democritus experts`
// list what C knows; a node that knows no expert answers alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  startDaemon, tempDir, removeDir, loopbackFlags, parseReady, killAll, run, waitFor,
  tinyModel, GGUF_GEN,
} from './lib.mjs';

const skip = (!GGUF_GEN || !existsSync(GGUF_GEN)) && 'no gguf-gen';

const DESC = {
  a: 'Python programming: writing, reviewing and debugging code, functions, classes, JSON '
    + 'parsing and unit tests',
  b: 'Poetry and creative writing: poems, sonnets, rhyme and stories about the sea, love and '
    + 'nature',
  c: 'Mathematics: algebra, calculus, arithmetic, equations, integrals and proofs',
};
const PROMPT = {
  code: 'Write a Python function that parses JSON, with unit tests',
  poem: 'Write a sonnet about the sea, with rhyme',
  math: 'Solve the equation x^2 + 3x = 10 and compute the integral of x^2',
};

async function start(root, name, seed, extra = []) {
  const state = join(root, name);
  const d = startDaemon([...loopbackFlags(state), '--models-dir', join(root, 'none'),
    '--model', tinyModel(root, seed, `tiny-${seed}.gguf`), '--temperature', '0',
    '--description', DESC[name],
    '--lookup-timeout-ms', '1500', ...extra], { timeout: 60000 });
  const ready = parseReady(await d.ready);
  return { d, state, url: ready.rest, p2p: ready.p2p.split(',')[0], peer: ready.peer };
}

async function chat(url, body) {
  return fetch(`${url}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
}

const ask = (content) => [{ role: 'user', content }];

// The experts C's last routed chat chose, from its log line
// "swarm chat routed in N ms to K of M candidate(s): <peer> (0.42, local), <peer> (0.10)".
function lastRoute(node) {
  const lines = node.d.stderr().split('\n').filter((l) => l.includes('swarm chat routed'));
  if (lines.length === 0) return null;
  const m = /candidate\(s\): (.*)$/.exec(lines[lines.length - 1]);
  const total = Number(/ of (\d+) candidate/.exec(lines[lines.length - 1])[1]);
  return { total, peers: m[1].split(', ').map((p) => p.split(' ')[0]) };
}

test('model "swarm": routed by description, streamed through, merged, failed over',
  { skip, timeout: 300000 }, async () => {
    const root = tempDir('dc-experts-');
    try {
      const a = await start(root, 'a', 1);
      const b = await start(root, 'b', 2, ['--bootstrap', a.p2p]);
      const c = await start(root, 'c', 3, ['--bootstrap', a.p2p]);

      // /v1/models lists "swarm"; "experts" belongs to it only.
      const models = await (await fetch(`${c.url}/v1/models`)).json();
      assert.ok(models.data.some((m) => m.id === 'swarm'), JSON.stringify(models));
      let res = await chat(c.url, { model: 'local', messages: ask('hi'), experts: 2 });
      assert.equal(res.status, 400);
      assert.equal((await res.json()).error.param, 'experts');

      // Each expert's own greedy answer to each prompt.
      const own = {};
      for (const [name, n] of Object.entries({ a, b, c })) {
        own[name] = {};
        for (const [k, p] of Object.entries(PROMPT)) {
          const j = await (await chat(n.url, { messages: ask(p), max_tokens: 12, temperature: 0 }))
            .json();
          own[name][k] = j.choices[0].message.content;
        }
      }
      assert.notEqual(own.a.code, own.b.code, 'the three models differ');

      // Until C has found both other experts (records published once the peers connected).
      await waitFor(async () => {
        const r = await chat(c.url, { model: 'swarm', experts: 1, messages: ask(PROMPT.code),
          max_tokens: 4, temperature: 0 });
        await r.text();
        const route = lastRoute(c);
        return route !== null && route.total >= 3;
      }, 60000, 'C to know all three experts');

      // What C knows: its own record and the two others, as GET /api/experts and the CLI
      // show it (signed records, so the descriptions are the publishers' own).
      const known = (await (await fetch(`${c.url}/api/experts`)).json()).experts;
      assert.equal(known.length, 3, JSON.stringify(known));
      for (const [name, n] of Object.entries({ a, b, c })) {
        const x = known.find((k) => k.peer_id === n.peer);
        assert.ok(x, `${name} known`);
        assert.equal(x.description, DESC[name]);
        assert.equal(x.self, n === c);
        assert.equal(x.model, `tiny-${name === 'a' ? 1 : name === 'b' ? 2 : 3}`);
      }
      const listed = run(['experts', '--state-dir', c.state]);
      assert.equal(listed.status, 0, listed.stderr);
      assert.equal(listed.stdout.trim().split('\n').length, 4, listed.stdout); // header + 3
      assert.match(listed.stdout, new RegExp(`${c.peer} \\(self\\)`));

      // One expert: the best match answers, token for token its own answer.
      for (const [k, who] of [['code', a], ['poem', b], ['math', c]]) {
        res = await chat(c.url, { model: 'swarm', experts: 1, messages: ask(PROMPT[k]),
          max_tokens: 12, temperature: 0 });
        assert.equal(res.status, 200);
        const j = await res.json();
        const route = lastRoute(c);
        assert.equal(route.peers[0], who.peer, `${k} routed to ${route.peers}`);
        const name = who === a ? 'a' : who === b ? 'b' : 'c';
        assert.equal(j.choices[0].message.content, own[name][k], `${k} answer`);
        assert.equal(j.model, 'swarm');
      }

      // Streamed: the same tokens as SSE chunks.
      res = await chat(c.url, { model: 'swarm', experts: 1, messages: ask(PROMPT.poem),
        max_tokens: 12, temperature: 0, stream: true });
      assert.equal(res.status, 200);
      const text = (await res.text()).split('\n\n').filter((e) => e.startsWith('data: {'))
        .map((e) => JSON.parse(e.slice(6)).choices[0]?.delta?.content ?? '').join('');
      assert.equal(text, own.b.poem);

      // Two experts: both answer, C's model writes one answer from the two.
      res = await chat(c.url, { model: 'swarm', experts: 2, messages: ask(PROMPT.code),
        max_tokens: 12, temperature: 0 });
      assert.equal(res.status, 200);
      let j = await res.json();
      let route = lastRoute(c);
      assert.equal(route.peers.length, 2);
      assert.equal(route.peers[0], a.peer);
      assert.match(c.d.stderr(), /writing one answer from 2 expert answers/);
      assert.equal(j.choices[0].finish_reason, 'length');
      assert.ok(j.usage.completion_tokens > 0);

      // `democritus ask --experts 1` asks the swarm through the SDK.
      const r = run(['ask', PROMPT.code, '--experts', '1', '--max-tokens', '12',
        '--state-dir', c.state]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, `${own.a.code}\n`);

      // B stops: the poem goes to B first (its record has not expired), fails, and the next
      // candidate answers.
      b.d.proc.kill('SIGTERM');
      assert.equal((await b.d.exited).code, 0);
      res = await chat(c.url, { model: 'swarm', experts: 1, messages: ask(PROMPT.poem),
        max_tokens: 12, temperature: 0 });
      j = await res.json();
      assert.equal(res.status, 200, JSON.stringify(j));
      route = lastRoute(c);
      assert.equal(route.peers[0], b.peer);
      assert.match(c.d.stderr(), /failing over to expert 2/);
      assert.ok([own.a.poem, own.c.poem].includes(j.choices[0].message.content));
      // ... and B, which just failed, is ranked last for a while: the next poem goes elsewhere
      // at once.
      res = await chat(c.url, { model: 'swarm', experts: 1, messages: ask(PROMPT.poem),
        max_tokens: 12, temperature: 0 });
      assert.equal(res.status, 200);
      await res.json();
      assert.notEqual(lastRoute(c).peers[0], b.peer);
      // B comes back (same identity, a new port) and connects to C: once C has identified it,
      // B is ranked normally again and answers the poem.
      const cLog = c.d.stderr().length;
      const b2 = await start(root, 'b', 2, ['--bootstrap', c.p2p]);
      assert.equal(b2.peer, b.peer);
      await waitFor(() => c.d.stderr().slice(cLog)
        .includes(`expert ${b.peer} is connected again: ranked normally`), 20000, 'B back');
      res = await chat(c.url, { model: 'swarm', experts: 1, messages: ask(PROMPT.poem),
        max_tokens: 12, temperature: 0 });
      j = await res.json();
      assert.equal(res.status, 200, JSON.stringify(j));
      assert.equal(lastRoute(c).peers[0], b.peer);
      assert.equal(j.choices[0].message.content, own.b.poem);

      // The coordinator's counters on /metrics.
      const metrics = await (await fetch(`${c.url}/metrics`)).text();
      const metric = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1]);
      assert.ok(metric('democritus_swarm_chats_total') >= 9, metrics);
      assert.ok(metric('democritus_swarm_failovers_total') >= 1);
      assert.ok(metric('democritus_swarm_syntheses_total') >= 1);
      assert.ok(metric('democritus_swarm_expert_calls_total') >= 11);
      assert.equal(metric('democritus_swarm_experts_known'), 3);

      for (const n of [a, b2, c]) {
        n.d.proc.kill('SIGTERM');
        assert.equal((await n.d.exited).code, 0, n.d.stderr());
      }
    } finally {
      killAll();
      removeDir(root);
    }
  });

test('model "swarm" on a node that knows no expert: its own model answers',
  { skip, timeout: 120000 }, async () => {
    const root = tempDir('dc-experts1-');
    try {
      const a = await start(root, 'a', 1);
      const own = await (await chat(a.url, { messages: ask(PROMPT.poem), max_tokens: 8,
        temperature: 0 })).json();
      const res = await chat(a.url, { model: 'swarm', messages: ask(PROMPT.poem), max_tokens: 8,
        temperature: 0 });
      assert.equal(res.status, 200);
      const j = await res.json();
      assert.equal(j.choices[0].message.content, own.choices[0].message.content);
      // Logprobs come through as the model's own, alternatives included.
      const lp = async (model) => (await (await chat(a.url, { model, messages: ask(PROMPT.poem),
        max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 })).json())
        .choices[0].logprobs.content;
      const swarmLp = await lp('swarm');
      assert.equal(swarmLp.length, 4);
      assert.ok(swarmLp.every((t) => t.top_logprobs.length === 2), JSON.stringify(swarmLp));
      assert.deepEqual(swarmLp, await lp('local'));
      // Embeddings do not go to the swarm.
      const e = await fetch(`${a.url}/v1/embeddings`, { method: 'POST',
        body: JSON.stringify({ model: 'swarm', input: 'x' }) });
      assert.equal(e.status, 400);
      a.d.proc.kill('SIGTERM');
      assert.equal((await a.d.exited).code, 0, a.d.stderr());
    } finally {
      killAll();
      removeDir(root);
    }
  });

// A chat rendered as the engine renders it for a model without a chat template (ChatML).
const chatml = (content) => `<|im_start|>user\n${content}<|im_end|>\n<|im_start|>assistant\n`;

// Mid-stream failover: C (no model of its own) streams B's answer; B is killed after four of
// its tokens reached the client, and A, the next candidate, continues the answer from where B
// stopped (over /democritus/infer/1.0.0, with continue_text). The client's one stream holds
// B's part and then exactly what A's model writes after the chat plus that part. Then B comes
// back and the same happens with A as the coordinator, continuing with its own engine.
test('model "swarm": an expert that dies mid-stream is continued by the next',
  { skip, timeout: 300000 }, async () => {
    const root = tempDir('dc-experts2-');
    try {
      // B: a larger model (~1 ms a token here), so that it is still writing when it is killed.
      const big = join(root, 'big.gguf');
      const g = spawnSync(GGUF_GEN, ['--arch', 'llama', '--dim', '512', '--layers', '6',
        '--heads', '8', '--kv-heads', '8', '--ff', '1536', '--vocab', '8000', '--ctx', '1024',
        '--type', 'q8_0', '--seed', '9', '-o', big], { encoding: 'utf8' });
      assert.equal(g.status, 0, g.stderr);
      const a = await start(root, 'a', 1);
      const startB = async () => {
        const d = startDaemon([...loopbackFlags(join(root, 'b')), '--models-dir',
          join(root, 'none'), '--model', big, '--temperature', '0', '--description', DESC.b,
          '--bootstrap', a.p2p], { timeout: 60000 });
        return { d, peer: parseReady(await d.ready).peer };
      };
      let b = await startB();
      const cd = startDaemon([...loopbackFlags(join(root, 'c')), '--models-dir',
        join(root, 'none'), '--lookup-timeout-ms', '1500', '--bootstrap', a.p2p],
      { timeout: 60000 });
      const c = { d: cd, url: parseReady(await cd.ready).rest };

      // The render the check below relies on: A's chat answer is its completion of ChatML.
      const own = await (await chat(a.url, { messages: ask(PROMPT.poem), max_tokens: 8,
        temperature: 0 })).json();
      const comp = async (prompt, n) => (await (await fetch(`${a.url}/v1/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt, max_tokens: n, temperature: 0 }),
      })).json()).choices[0].text;
      assert.equal(await comp(chatml(PROMPT.poem), 8), own.choices[0].message.content);

      // Until 'coord' routes the poem to B and B answers it. A call to B that failed would
      // rank B last for a minute, so B must be reachable first: identified by A, which it
      // bootstraps from (after a restart A would otherwise dial B's old address).
      const untilB = async (coord, aLogFrom) => {
        await waitFor(async () => a.d.stderr().slice(aLogFrom).includes(`identified ${b.peer}`),
          30000, 'B identified by A');
        await waitFor(async () => {
          const before = coord.d.stderr().length;
          const r = await chat(coord.url, { model: 'swarm', experts: 1,
            messages: ask(PROMPT.poem), max_tokens: 2, temperature: 0 });
          await r.text();
          const route = lastRoute(coord);
          assert.doesNotMatch(coord.d.stderr().slice(before), /failed:/);
          return r.status === 200 && route !== null && route.total >= 2 &&
            route.peers[0] === b.peer;
        }, 60000, 'the poem to be routed to B');
      };

      // A streamed poem through 'coord'; B is killed after four tokens; A continues.
      const MAX = 300;
      const killMidStream = async (coord) => {
        const before = coord.d.stderr().length;
        const res = await chat(coord.url, { model: 'swarm', experts: 1,
          messages: ask(PROMPT.poem), max_tokens: MAX, temperature: 0, stream: true,
          stream_options: { include_usage: true } });
        assert.equal(res.status, 200);
        const reader = res.body.getReader();
        const dec = new TextDecoder();
        let raw = '';
        let killed = false;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          raw += dec.decode(value, { stream: true });
          if (!killed && (raw.match(/"content":"[^"]/g) ?? []).length >= 4) {
            b.d.proc.kill('SIGKILL');
            killed = true;
          }
        }
        assert.ok(killed, raw);
        assert.equal(lastRoute(coord).peers[0], b.peer, 'the poem went to B first');
        const events = raw.split('\n\n').filter((e) => e.startsWith('data: '));
        assert.equal(events[events.length - 1], 'data: [DONE]');
        const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
        assert.ok(!chunks.some((ch) => ch.error), raw);
        const text = chunks.map((ch) => ch.choices[0]?.delta?.content ?? '').join('');
        const finish = chunks.map((ch) => ch.choices[0]?.finish_reason).filter(Boolean);
        const usage = chunks[chunks.length - 1].usage;

        const log = coord.d.stderr().slice(before);
        const m = /failing over to expert 2 of \d+ \((\S+)\), which continues the answer after (\d+) bytes \((\d+) tokens\)/
          .exec(log);
        assert.ok(m, log);
        assert.equal(m[1], a.peer, 'A continues');
        const bytes = Number(m[2]);
        const carried = Number(m[3]);
        assert.ok(bytes > 0 && carried > 0 && carried < MAX, m[0]);
        console.log(`B sent ${bytes} bytes (${carried} tokens) before it was killed; A wrote the rest`);
        const all = Buffer.from(text);
        const head = all.subarray(0, bytes).toString();
        const rest = all.subarray(bytes).toString();
        assert.equal(rest, await comp(chatml(PROMPT.poem) + head, MAX - carried),
          'the rest is what A writes after B\'s part');
        assert.deepEqual(finish, ['length']);
        assert.equal(usage.completion_tokens, MAX);
      };

      // C coordinates: A continues over the infer protocol.
      await untilB(c, 0);
      await killMidStream(c);
      // A coordinates (B back, same identity): A continues with its own engine.
      await b.d.exited;
      const aLog = a.d.stderr().length;
      b = await startB();
      await untilB(a, aLog);
      await killMidStream(a);

      for (const n of [a, c]) {
        n.d.proc.kill('SIGTERM');
        assert.equal((await n.d.exited).code, 0, n.d.stderr());
      }
    } finally {
      killAll();
      removeDir(root);
    }
  });
