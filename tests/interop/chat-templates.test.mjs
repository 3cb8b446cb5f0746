// SPDX-License-Identifier: MIT
// Interop: our chat renderings against a real Jinja renderer. For each real
// tokenizer.chat_template in $DC_SHARED_DIR/tokenizers/templates, gguf-gen writes a tiny model
// carrying it (--chat-template), `democritus generate --chat --print-prompt` prints what the
// engine renders (llama.cpp's built-in family renderer, llama_chat_apply_template), and
// @huggingface/jinja (tests/interop/package-lock.json) renders the template text itself, the way
// transformers' apply_chat_template does. Three conversations: [system, user], [user] and
// user/assistant/user.
//
// BOS: we render with bos_token '' because llama.cpp's renderer never writes the BOS text: the
// tokenizer adds the BOS token (add_bos_token), so a prompt carrying its text would start with
// two. For the templates that print bos_token, the test checks that they print it once, at the
// very start, so leaving it to the tokenizer loses nothing. EOS: each family's own eos text.
//
// EXPECT is the per-template table; 'family' names the llama.cpp renderer the template is
// recognised as (llm_chat_detect_template; documentation only). 'exact': our rendering must
// equal Jinja's byte for byte. Otherwise 'differs' says why that renderer legitimately differs,
// 'toLlama' turns Jinja's output into what llama.cpp must produce (and 'jinjaMessages' adapts
// the conversation where Jinja cannot take it as it is): the result must still match exactly,
// and every message text must appear in order. Without ../shared only the last test (ChatML
// fallback, raw --print-prompt, --messages usage errors) runs; the comparisons are skipped.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { run, tempDir, removeDir } from '../e2e/lib.mjs';

const BUILD = process.env.DC_BUILD_DIR;
const SHARED = process.env.DC_SHARED_DIR;
const GEN = BUILD ? join(BUILD, 'bin', 'gguf-gen') : null;
const TEMPLATES = SHARED ? join(SHARED, 'tokenizers', 'templates') : null;
// Skips go through node:test rather than exit code 77: under `node --test` a file that exits 77
// is reported as a failure (exit status 1), so ctest's SKIP_RETURN_CODE never sees the 77.
const NO_GEN = !GEN || !existsSync(GEN)
  ? 'gguf-gen not built (DC_BUILD_DIR unset or tools not built)' : false;
const NO_TEMPLATES = NO_GEN || (!TEMPLATES || !existsSync(TEMPLATES)
  ? `no chat templates at ${TEMPLATES ?? '$DC_SHARED_DIR/tokenizers/templates (unset)'} ` +
    '(../shared absent): the Jinja comparison is skipped' : false);
if (NO_TEMPLATES) console.error(`chat-templates: skipping: ${NO_TEMPLATES}`);

const SYSTEM = 'You are terse.';
const CONVERSATIONS = {
  'system+user': [
    { role: 'system', content: SYSTEM },
    { role: 'user', content: 'Hi there' },
  ],
  user: [{ role: 'user', content: 'Hi there' }],
  'multi-turn': [
    { role: 'user', content: 'Hi there' },
    { role: 'assistant', content: 'Hello! How can I help?' },
    { role: 'user', content: 'Tell me a joke.' },
  ],
};

// Llama 3.x templates put a dated header in the system turn (Llama 3.2 asks strftime_now for
// today's date unless date_string is given); fix the date so the Jinja output is reproducible.
const DATE = '26 Jul 2024';
const LLAMA3_HEADER = `Cutting Knowledge Date: December 2023\nToday Date: ${DATE}\n\n`;
const LLAMA3_EMPTY_SYSTEM = '<|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>';
const hasSystem = (msgs) => msgs.some((m) => m.role === 'system');

const llama3 = {
  eos: '<|eot_id|>', bos: true, family: 'llama3',
  differs: 'the template opens every chat with a system turn holding "Cutting Knowledge Date" ' +
    'and "Today Date" lines (an otherwise empty one when there is no system message); ' +
    'llama.cpp\'s llama3 renderer writes the system message as it is and no system turn ' +
    'without one',
  toLlama: (j) => j.replace(LLAMA3_HEADER, '').replace(LLAMA3_EMPTY_SYSTEM, ''),
};

const EXPECT = {
  'HuggingFaceTB-SmolLM3-3B': {
    eos: '<|im_end|>', bos: false, family: 'chatml',
    differs: 'llama.cpp recognises the template as plain ChatML; the template wraps the system ' +
      'turn in a "## Metadata" block (knowledge cutoff, reasoning mode) with "## Custom ' +
      'Instructions", and supplies its long default system prompt when there is none',
    toLlama: (j, msgs) => {
      const sys = msgs.find((m) => m.role === 'system');
      const head = /^<\|im_start\|>system\n[\s\S]*?<\|im_end\|>\n/;
      assert.match(j, head, 'SmolLM3 always renders a system turn');
      return j.replace(head, sys ? `<|im_start|>system\n${sys.content}<|im_end|>\n` : '');
    },
  },
  'Qwen-Qwen2.5-7B-Instruct': {
    eos: '<|im_end|>', bos: false, family: 'chatml',
    differs: 'without a system message the template inserts its default one ("You are Qwen, ' +
      'created by Alibaba Cloud. ..."); llama.cpp\'s chatml renderer adds none (with one, exact)',
    toLlama: (j, msgs) => (hasSystem(msgs) ? j : j.replace(
      '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful ' +
      'assistant.<|im_end|>\n', '')),
  },
  'Qwen-Qwen3-0.6B': { eos: '<|im_end|>', bos: false, family: 'chatml', exact: true },
  'deepseek-ai-DeepSeek-R1-Distill-Llama-8B': {
    eos: '<｜end▁of▁sentence｜>', bos: true, family: 'deepseek3',
    differs: 'the template opens the assistant turn with "<think>\\n"; llama.cpp\'s deepseek3 ' +
      'renderer stops at "<｜Assistant｜>" (the model writes <think> itself) and puts "\\n\\n" ' +
      'after the system text, which the template does not',
    toLlama: (j, msgs) => {
      const sys = msgs.find((m) => m.role === 'system');
      assert.ok(j.endsWith('<｜Assistant｜><think>\n'), 'the template opens a think block');
      let t = j.slice(0, -'<think>\n'.length);
      if (sys) t = t.replace(`${sys.content}<｜User｜>`, `${sys.content}\n\n<｜User｜>`);
      return t;
    },
  },
  'google-gemma-2-2b-it': {
    eos: '<eos>', bos: true, family: 'gemma',
    differs: 'the template refuses a system message ("System role not supported"); llama.cpp\'s ' +
      'gemma renderer folds it into the first user turn as "<system>\\n\\n<user text>", so ' +
      'that conversation is compared with the folded one rendered by the template',
    jinjaMessages: (msgs) => {
      if (!hasSystem(msgs)) return msgs;
      const rest = msgs.filter((m) => m.role !== 'system');
      rest[0] = { ...rest[0], content: `${msgs[0].content}\n\n${rest[0].content}` };
      return rest;
    },
    toLlama: (j) => j,
  },
  'meta-llama-Llama-3.1-8B-Instruct': llama3,
  'meta-llama-Llama-3.2-3B-Instruct': llama3,
  'microsoft-Phi-3.5-mini-instruct': {
    eos: '<|endoftext|>', bos: false, family: 'phi3', exact: true,
  },
  'mistralai-Mistral-Nemo-Instruct-2407': {
    eos: '</s>', bos: true, family: 'mistral-v3-tekken', exact: true,
  },
};

let dir;
before(() => { dir = tempDir('dc-chat-templates-'); });
after(() => removeDir(dir));

const renderJinja = (text, messages, bos, eos) => new Template(text).render({
  messages, add_generation_prompt: true, bos_token: bos, eos_token: eos, date_string: DATE,
});

function makeModel(name, templatePath) {
  const out = join(dir, `${name}.gguf`);
  const g = spawnSync(GEN, ['--arch', 'llama', '--dim', '64', '--layers', '1', '--heads', '2',
    '--kv-heads', '2', '--vocab', '300', '--type', 'f32', '--seed', '1',
    '--chat-template', templatePath, '-o', out], { encoding: 'utf8' });
  assert.equal(g.status, 0, g.stderr);
  return out;
}

// What the engine renders. [system, user] goes through --system/--prompt, the flags a user
// types; the others through --messages.
function renderOurs(model, msgs) {
  const two = msgs.length === 2 && msgs[0].role === 'system' && msgs[1].role === 'user';
  const one = msgs.length === 1 && msgs[0].role === 'user';
  const args = two ? ['--system', msgs[0].content, '--prompt', msgs[1].content]
    : one ? ['--prompt', msgs[0].content] : ['--messages', JSON.stringify(msgs)];
  const r = run(['generate', '--model', model, '--chat', ...args, '--print-prompt']);
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /using ChatML/, 'the template was recognised');
  return r.stdout;
}

test('every shared template has an expectation', { skip: NO_TEMPLATES }, () => {
  const names = readdirSync(TEMPLATES).filter((f) => f.endsWith('.jinja'))
    .map((f) => f.slice(0, -'.jinja'.length)).sort();
  assert.ok(names.length > 0, `no templates in ${TEMPLATES}`);
  assert.deepEqual(names, Object.keys(EXPECT).sort(),
    'add new templates to EXPECT (exact, or differs with the reason)');
});

for (const [name, ex] of Object.entries(EXPECT)) {
  test(`${name} (${ex.family}): ${ex.exact ? 'exact' : 'differs'}`, { skip: NO_TEMPLATES }, (t) => {
    const path = join(TEMPLATES, `${name}.jinja`);
    if (!existsSync(path)) {
      t.skip(`${path} is absent`);
      return;
    }
    if (!ex.exact) t.diagnostic(`differs: ${ex.differs}`);
    const text = readFileSync(path, 'utf8');
    const model = makeModel(name, path);
    let allExact = true;
    for (const [conv, msgs] of Object.entries(CONVERSATIONS)) {
      const jmsgs = ex.jinjaMessages ? ex.jinjaMessages(msgs) : msgs;
      const j = renderJinja(text, jmsgs, '', ex.eos);
      const ours = renderOurs(model, msgs);
      if (ex.bos) {
        assert.equal(renderJinja(text, jmsgs, '<BOS>', ex.eos), `<BOS>${j}`,
          `${name} ${conv}: bos_token only at the start`);
      } else {
        assert.ok(!renderJinja(text, jmsgs, '<BOS>', ex.eos).includes('<BOS>'),
          `${name} ${conv}: the template does not print bos_token`);
      }
      if (ex.exact) {
        assert.equal(ours, j, `${name} ${conv}: llama.cpp and Jinja render alike`);
        continue;
      }
      allExact &&= jmsgs === msgs && ours === j;
      assert.equal(ours, ex.toLlama(j, msgs), `${name} ${conv}: ${ex.differs}`);
      // What must match whatever the family does: every message text, in order.
      let at = 0;
      for (const m of msgs) {
        const k = ours.indexOf(m.content, at);
        assert.ok(k >= 0, `${name} ${conv}: "${m.content}" rendered in order`);
        at = k + m.content.length;
      }
    }
    if (!ex.exact && allExact) t.diagnostic(`${name} now renders exactly: mark it exact in EXPECT`);
  });
}

test('an unrecognised template falls back to ChatML with a warning', { skip: NO_GEN }, () => {
  const path = join(dir, 'unknown.jinja');
  writeFileSync(path, "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}");
  const model = makeModel('unknown', path);
  const r = run(['generate', '--model', model, '--chat', '--system', SYSTEM, '--prompt', 'Hi',
    '--print-prompt']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `<|im_start|>system\n${SYSTEM}<|im_end|>\n<|im_start|>user\nHi` +
    '<|im_end|>\n<|im_start|>assistant\n');
  assert.match(r.stderr, /no usable chat template, using ChatML/);

  // Without --chat, --print-prompt prints the raw prompt, nothing added.
  const raw = run(['generate', '--model', model, '--prompt', 'plain text\n', '--print-prompt']);
  assert.equal(raw.status, 0, raw.stderr);
  assert.equal(raw.stdout, 'plain text\n');

  // --messages: usage errors exit 2.
  for (const bad of [['--messages', '[]', '--chat'], ['--messages', '{"role":"user"}', '--chat'],
    ['--messages', '[{"role":"user"}]', '--chat'], ['--messages', 'nope', '--chat'],
    ['--messages', '[{"role":"user","content":"x"}]'], ['--system', 'S', '--prompt', 'P']]) {
    const e = run(['generate', '--model', model, ...bad, '--print-prompt']);
    assert.equal(e.status, 2, `${bad.join(' ')}: ${e.stderr}`);
  }
});
