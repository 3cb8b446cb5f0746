// SPDX-License-Identifier: MIT
// Interop: the official `openai` npm client (4.x, tests/interop/package-lock.json) against a
// daemon serving a tiny model made by gguf-gen: chat (plain and streaming with usage),
// completions, embeddings (the client asks for base64 and decodes it), models.list, errors as
// the client's typed exceptions (AuthenticationError on a bad key, NotFoundError for an
// unknown model, BadRequestError for n > 1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import OpenAI from 'openai';
import {
  startDaemon, tempDir, removeDir, loopbackFlags, parseReady, killAll,
} from '../e2e/lib.mjs';

const BUILD = process.env.DC_BUILD_DIR;
const GGUF_GEN = BUILD ? join(BUILD, 'bin', 'gguf-gen') : null;
if (!GGUF_GEN || !existsSync(GGUF_GEN)) {
  console.error('gguf-gen not built; skipping');
  process.exit(77);
}

const KEY = 'sk-interop-test-key';

test('openai client: chat, stream, completions, embeddings, models, errors', async () => {
  const root = tempDir('dc-openai-');
  try {
    const models = join(root, 'models');
    mkdirSync(models, { recursive: true });
    const g = spawnSync(GGUF_GEN, ['--arch', 'llama', '--dim', '64', '--layers', '2', '--heads', '4',
      '--kv-heads', '4', '--vocab', '512', '--type', 'f32', '--seed', '1', '-o',
      join(models, 'tiny.gguf')], { encoding: 'utf8' });
    assert.equal(g.status, 0, g.stderr);
    const d = startDaemon([...loopbackFlags(join(root, 'state')), '--models-dir', models,
      '--api-key', KEY, '--max-context', '512'], { timeout: 60000 });
    const { rest } = parseReady(await d.ready);
    const client = new OpenAI({ apiKey: KEY, baseURL: `${rest}/v1`, maxRetries: 0 });

    const list = await client.models.list();
    const ids = list.data.map((m) => m.id);
    assert.ok(ids.includes('local') && ids.includes('tiny') && ids.includes('swarm'),
      `models ${ids}`);

    // "swarm" on a node that knows no other expert: its own model answers.
    const sw = await client.chat.completions.create({
      model: 'swarm', messages: [{ role: 'user', content: 'Say hi' }], max_tokens: 4,
      temperature: 0,
    });
    assert.equal(sw.model, 'swarm');
    assert.ok(sw.usage.completion_tokens > 0);

    const chat = await client.chat.completions.create({
      model: 'tiny', messages: [{ role: 'user', content: 'Say hi' }], max_tokens: 8, temperature: 0,
    });
    assert.equal(chat.object, 'chat.completion');
    assert.equal(chat.choices[0].message.role, 'assistant');
    assert.equal(typeof chat.choices[0].message.content, 'string');
    assert.ok(chat.usage.completion_tokens > 0);

    const stream = await client.chat.completions.create({
      model: 'local', messages: [{ role: 'user', content: 'Say hi' }], max_tokens: 8, temperature: 0,
      stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let usage = null;
    let finish = null;
    for await (const chunk of stream) {
      if (chunk.choices.length) {
        text += chunk.choices[0].delta.content ?? '';
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, chat.choices[0].message.content, 'greedy stream equals the plain answer');
    assert.ok(['stop', 'length'].includes(finish));
    assert.deepEqual(usage, chat.usage);

    const comp = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 4 });
    assert.equal(comp.object, 'text_completion');
    assert.equal(typeof comp.choices[0].text, 'string');
    assert.ok(comp.usage.completion_tokens <= 4);

    const emb = await client.embeddings.create({ model: 'tiny', input: ['hello', 'world'] });
    assert.equal(emb.data.length, 2);
    assert.ok(Array.isArray(emb.data[0].embedding) && emb.data[0].embedding.length > 0);
    assert.ok(emb.data[0].embedding.every((x) => Number.isFinite(x)));

    const bad = new OpenAI({ apiKey: 'sk-wrong', baseURL: `${rest}/v1`, maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
    await assert.rejects(client.chat.completions.create({
      model: 'missing-model', messages: [{ role: 'user', content: 'x' }],
    }), (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
    await assert.rejects(client.chat.completions.create({
      model: 'tiny', messages: [{ role: 'user', content: 'x' }], n: 2,
    }), (e) => e instanceof OpenAI.BadRequestError && /not supported/.test(e.message));
    await assert.rejects(client.chat.completions.create({
      model: 'tiny', messages: [{ role: 'user', content: 'x' }], max_tokens: 100000,
    }), (e) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded');

    d.proc.kill('SIGTERM');
    const { code } = await d.exited;
    assert.equal(code, 0, d.stderr());
  } finally {
    killAll();
    removeDir(root);
  }
});
