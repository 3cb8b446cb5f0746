// SPDX-License-Identifier: MIT
// `democritus generate` through the real binary on a tiny model that gguf-gen writes here:
// JSON Lines output, -n, --logprobs, --prompt-tokens (also on a vocabulary-only GGUF from
// ../shared when present), usage errors, and a truncated GGUF failing with one clear line.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, tempDir, removeDir } from './lib.mjs';

const BUILD = process.env.DC_BUILD_DIR;
const SHARED = process.env.DC_SHARED_DIR;
const GEN = BUILD ? join(BUILD, 'bin', 'gguf-gen') : null;
if (!GEN || !existsSync(GEN)) {
  console.error('gguf-gen not found (DC_BUILD_DIR unset or tools not built)');
  process.exit(77);
}

let dir;
let model;

before(() => {
  dir = tempDir('dc-generate-');
  model = join(dir, 'tiny.gguf');
  const r = spawnSync(GEN, ['--arch', 'llama', '--dim', '64', '--layers', '2', '--heads', '4',
    '--kv-heads', '2', '--vocab', '384', '--type', 'f32', '--seed', '11', '-o', model],
  { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

after(() => removeDir(dir));

const gen = (args, opts) => run(['generate', '--state-dir', join(dir, 'state'), ...args], opts);

test('generate --json: one object per token, then a summary; -n respected', () => {
  const r = gen(['--model', model, '--prompt', 'Once upon a time', '-n', '12', '--temp', '0',
    '--json', '--logprobs', '3']);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  const summary = lines.pop().summary;
  assert.ok(summary, 'the last line is the summary');
  assert.ok(summary.tokens >= 1 && summary.tokens <= 12, `tokens ${summary.tokens}`);
  assert.ok(['stop', 'length'].includes(summary.finish_reason));
  if (summary.finish_reason === 'length') assert.equal(summary.tokens, 12);
  assert.ok(summary.prompt_tokens > 1);
  assert.ok(summary.gen_tokens_per_s >= 0 && summary.prompt_tokens_per_s > 0);
  // The end-of-generation token (if any) is not printed.
  assert.ok(lines.length === summary.tokens || lines.length === summary.tokens - 1);
  for (const t of lines) {
    assert.equal(typeof t.id, 'number');
    assert.equal(typeof t.text, 'string');
    assert.ok(t.logprob <= 0);
    assert.equal(t.top.length, 3);
    // Greedy: the chosen token is the raw distribution's best.
    assert.equal(t.top[0].id, t.id);
    assert.ok(Math.abs(t.top[0].logprob - t.logprob) < 1e-6);
    assert.ok(t.top[0].logprob >= t.top[1].logprob && t.top[1].logprob >= t.top[2].logprob);
  }
});

test('generate: greedy text is reproducible and -n bounds it', () => {
  const a = gen(['--model', model, '--prompt', 'abc', '-n', '8', '--temp', '0']);
  const b = gen(['--model', model, '--prompt', 'abc', '-n', '8', '--temp', '0']);
  assert.equal(a.status, 0, a.stderr);
  assert.equal(a.stdout, b.stdout);
  const s = gen(['--model', model, '--prompt', 'abc', '-n', '5', '--temp', '0.9', '--seed', '3',
    '--top-k', '20', '--top-p', '0.9', '--threads', '1', '--json']);
  assert.equal(s.status, 0, s.stderr);
  const lines = s.stdout.trim().split('\n');
  assert.ok(JSON.parse(lines.at(-1)).summary.tokens <= 5);
});

test('generate --prompt-tokens prints ids and exits', () => {
  const r = gen(['--model', model, '--prompt', 'Hello world', '--prompt-tokens']);
  assert.equal(r.status, 0, r.stderr);
  const ids = r.stdout.trim().split(' ').map(Number);
  assert.ok(ids.length >= 2);
  assert.equal(ids[0], 1, 'BOS first, as the metadata asks');
  assert.ok(ids.every((x) => Number.isInteger(x) && x >= 0 && x < 384));

  const vocab = SHARED && join(SHARED, 'tokenizers', 'ggml-vocab-llama-spm.gguf');
  if (vocab && existsSync(vocab)) {
    const v = gen(['--model', vocab, '--prompt', 'Hello world', '--prompt-tokens']);
    assert.equal(v.status, 0, v.stderr);
    assert.equal(v.stdout.trim(), '1 15043 3186');
  }
});

test('generate: usage errors exit 2, a truncated GGUF exits 1 with one clear line', () => {
  assert.equal(gen(['--prompt', 'x']).status, 2);
  assert.equal(gen(['--model', model]).status, 2);
  assert.equal(gen(['--model', model, '--prompt', 'x', '-n', 'zero']).status, 2);

  const trunc = join(dir, 'trunc.gguf');
  writeFileSync(trunc, readFileSync(model).subarray(0, 5000));
  const r = gen(['--model', trunc, '--prompt', 'x']);
  assert.equal(r.status, 1);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /trunc\.gguf/);
  assert.match(r.stderr, /not a valid GGUF/);

  const missing = gen(['--model', join(dir, 'nope.gguf'), '--prompt', 'x']);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /nope\.gguf/);
});

test('generate: a prompt that cannot fit the context is refused', () => {
  const r = gen(['--model', model, '--prompt', 'x '.repeat(50), '-n', '100000', '--max-context',
    '64']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /do not fit the context/);
});
