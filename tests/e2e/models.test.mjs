// SPDX-License-Identifier: MIT
// `democritus models list` and `democritus models pull` through the binary, without a daemon:
// a models folder of gguf-gen models plus a corrupt file; downloads from a local HTTP server
// (node:http on port 0) including a resumed transfer (the server honours Range), a non-GGUF
// URL refused at its first bytes, an HTTP error and a GGUF-looking file that fails validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, cleanEnv, tempDir, removeDir, run } from './lib.mjs';

const GEN = process.env.DC_BUILD_DIR ? join(process.env.DC_BUILD_DIR, 'bin', 'gguf-gen') : null;
if (!GEN || !existsSync(GEN)) {
  console.error('gguf-gen not built (DC_BUILD_DIR/bin/gguf-gen): skipping');
  process.exit(77);
}

function gen(out, seed, type = 'f32') {
  const r = spawnSync(GEN, ['--arch', 'llama', '--dim', '64', '--layers', '2', '--heads', '4',
    '--kv-heads', '2', '--vocab', '320', '--ctx', '256', '--type', type, '--seed', String(seed),
    '--threads', '1', '-o', out], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

// spawnSync would block the event loop that serves the HTTP requests: run asynchronously.
function runAsync(args, opts = {}) {
  return new Promise((resolve) => {
    const p = spawn(BIN, args, { env: cleanEnv(), cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeout ?? 30000);
    p.on('error', (e) => {
      clearTimeout(timer);
      resolve({ status: null, signal: null, stdout, stderr: `${stderr}${e}` });
    });
    p.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

test('models list: table and JSON, corrupt file listed with its error', () => {
  const root = tempDir();
  try {
    const dir = join(root, 'models');
    mkdirSync(dir);
    gen(join(dir, 'alpha.gguf'), 1);
    gen(join(dir, 'beta.gguf'), 2, 'q8_0');
    writeFileSync(join(dir, 'broken.gguf'), Buffer.from('GGUF\x03\x00\x00\x00junk'));
    writeFileSync(join(dir, 'readme.txt'), 'not a model');
    const flags = ['--models-dir', dir, '--state-dir', join(root, 'state')];

    const t = run(['models', 'list', ...flags], { cwd: root });
    assert.equal(t.status, 0, t.stderr);
    const lines = t.stdout.split('\n');
    assert.match(lines[0], /ID\s+ARCH\s+PARAMS\s+QUANT\s+SIZE\s+CTX\s+SHA256/);
    assert.match(t.stdout, /^\* alpha\s+llama\s+164\.2K\s+F32\s+[\d.]+ KiB\s+256\s+[0-9a-f]{12}$/m);
    assert.match(t.stdout, /^ {2}beta\s+llama\s+164\.2K\s+Q8_0\s/m);
    assert.match(t.stdout, /^ {2}broken\s+error: .*corrupt GGUF/m);
    assert.ok(!t.stdout.includes('readme'));

    const j = run(['models', 'list', '--json', ...flags], { cwd: root });
    assert.equal(j.status, 0, j.stderr);
    const doc = JSON.parse(j.stdout);
    assert.equal(doc.models_dir, dir);
    assert.deepEqual(doc.models.map((m) => m.id), ['alpha', 'beta', 'broken']);
    const [a, b, bad] = doc.models;
    assert.equal(a.default, true);
    assert.equal(a.arch, 'llama');
    assert.equal(a.quantization, 'F32');
    assert.equal(a.params, 164160);
    assert.equal(a.ctx, 256);
    assert.equal(a.sha256, sha256(readFileSync(join(dir, 'alpha.gguf'))));
    assert.equal(b.sha256, sha256(readFileSync(join(dir, 'beta.gguf'))));
    assert.equal(b.default, false);
    assert.match(bad.error, /corrupt GGUF/);
    assert.equal(bad.sha256, undefined);

    // model_path names the default, even outside models_dir.
    const m = run(['models', 'list', '--json', ...flags, '--model', join(dir, 'beta.gguf')],
      { cwd: root });
    assert.equal(m.status, 0, m.stderr);
    assert.equal(JSON.parse(m.stdout).models[0].id, 'beta');
    assert.equal(JSON.parse(m.stdout).models[0].default, true);

    // Usage errors exit 2.
    assert.equal(run(['models', 'frob', ...flags], { cwd: root }).status, 2);
    assert.equal(run(['models', 'pull', ...flags], { cwd: root }).status, 2);
    // An empty folder lists nothing.
    const e = run(['models', 'list', '--models-dir', join(root, 'none'), '--state-dir',
      join(root, 'state')], { cwd: root });
    assert.equal(e.status, 0, e.stderr);
    assert.match(e.stdout, /no models in/);
  } finally {
    removeDir(root);
  }
});

test('models pull: download, resume with Range, refusals', async () => {
  const root = tempDir();
  const dir = join(root, 'models');
  const src = join(root, 'src.gguf');
  gen(src, 7, 'q8_0');
  const model = readFileSync(src);
  const half = Math.floor(model.length / 2);
  const ranges = [];
  let cutNext = true;

  const server = createServer((req, res) => {
    const range = req.headers.range;
    ranges.push({ url: req.url, range });
    if (req.url === '/m/tiny.gguf' || req.url === '/resume/partial.gguf') {
      const m = range && /^bytes=(\d+)-$/.exec(range);
      const start = m ? Number(m[1]) : 0;
      if (m) {
        res.writeHead(206, { 'content-length': model.length - start,
          'content-range': `bytes ${start}-${model.length - 1}/${model.length}` });
      } else {
        res.writeHead(200, { 'content-length': model.length });
      }
      if (req.url === '/resume/partial.gguf' && cutNext && !m) {
        // The first transfer breaks half-way.
        cutNext = false;
        res.write(model.subarray(0, half), () => setTimeout(() => res.socket.destroy(), 50));
        return;
      }
      res.end(model.subarray(start));
    } else if (req.url === '/page.gguf') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html><body>not a model</body></html>'.repeat(100));
    } else if (req.url === '/bad.gguf') {
      res.writeHead(200);
      res.end(Buffer.concat([Buffer.from('GGUF\x03\x00\x00\x00'), Buffer.alloc(64, 0xff)]));
    } else {
      res.writeHead(404);
      res.end('no');
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  const flags = ['--models-dir', dir, '--state-dir', join(root, 'state')];
  try {
    // A plain download: sha256sum-style line on stdout, file in place, no .part left.
    let r = await runAsync(['models', 'pull', `${base}/m/tiny.gguf`, ...flags], { cwd: root });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${sha256(model)}  ${join(dir, 'tiny.gguf')}\n`);
    assert.ok(readFileSync(join(dir, 'tiny.gguf')).equals(model));
    assert.ok(!existsSync(join(dir, 'tiny.gguf.part')));
    // Pulling onto an existing name is refused.
    r = await runAsync(['models', 'pull', `${base}/m/tiny.gguf`, ...flags], { cwd: root });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /already exists/);

    // Interrupted half-way: the .part stays; the same command resumes with a Range request.
    r = await runAsync(['models', 'pull', `${base}/resume/partial.gguf`, '--output', 'resumed',
      ...flags], { cwd: root });
    assert.equal(r.status, 1, 'the broken transfer fails');
    assert.match(r.stderr, /resume/);
    const part = join(dir, 'resumed.gguf.part');
    assert.equal(readFileSync(part).length, half);
    r = await runAsync(['models', 'pull', `${base}/resume/partial.gguf`, '--output', 'resumed',
      ...flags], { cwd: root });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(ranges.at(-1).range, `bytes=${half}-`);
    assert.ok(readFileSync(join(dir, 'resumed.gguf')).equals(model));
    assert.ok(!existsSync(part));
    assert.equal(r.stdout.split('  ')[0], sha256(model));

    // Not a GGUF: refused at the first bytes, nothing left behind.
    r = await runAsync(['models', 'pull', `${base}/page.gguf`, ...flags], { cwd: root });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /not a GGUF file/);
    assert.ok(!existsSync(join(dir, 'page.gguf')));
    assert.ok(!existsSync(join(dir, 'page.gguf.part')));
    // GGUF magic but invalid: refused by the validator after the download, deleted.
    r = await runAsync(['models', 'pull', `${base}/bad.gguf`, ...flags], { cwd: root });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /not a valid GGUF/);
    assert.ok(!existsSync(join(dir, 'bad.gguf')));
    assert.ok(!existsSync(join(dir, 'bad.gguf.part')));
    // HTTP errors and bad URLs.
    r = await runAsync(['models', 'pull', `${base}/missing.gguf`, ...flags], { cwd: root });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /HTTP status 404/);
    r = await runAsync(['models', 'pull', 'ftp://example.com/x.gguf', ...flags], { cwd: root });
    assert.equal(r.status, 2);

    // The pulled models are listed with the same hashes.
    r = await runAsync(['models', 'list', '--json', ...flags], { cwd: root });
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.deepEqual(doc.models.map((m) => m.id), ['resumed', 'tiny']);
    assert.ok(doc.models.every((m) => m.sha256 === sha256(model)));
  } finally {
    server.close();
    removeDir(root);
  }
});

test('benchmark engine: JSON shape on a tiny model; hostile and missing files refused', () => {
  const root = tempDir();
  try {
    const m = join(root, 'tiny.gguf');
    gen(m, 3, 'q8_0');
    const r = run(['benchmark', 'engine', '--model', m, '--threads', '1', '--pp', '16', '--tg', '4',
      '--parallel', '1,2', '--reps', '1', '--json'], { cwd: root, timeout: 120000 });
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.model, m);
    assert.equal(doc.threads, 1);
    for (const k of ['pp', 'tg']) {
      assert.ok(doc[k].ours > 0 && doc[k].llama > 0, JSON.stringify(doc[k]));
      assert.ok(Math.abs(doc[k].ratio - doc[k].ours / doc[k].llama) < 1e-3);
    }
    assert.deepEqual(doc.parallel.map((p) => p.n), [1, 2]);
    assert.ok(doc.parallel.every((p) => p.tok_s > 0));

    // llama.block_count = 0 passes our validator but aborts llama.cpp: refused, no crash.
    const bytes = readFileSync(m);
    const key = Buffer.from('llama.block_count');
    const at = bytes.indexOf(key) + key.length;
    assert.equal(bytes.readUInt32LE(at), 4); // uint32 type tag, then the value
    bytes.writeUInt32LE(0, at + 4);
    const hostile = join(root, 'hostile.gguf');
    writeFileSync(hostile, bytes);
    const h = run(['benchmark', 'engine', '--model', hostile, '--threads', '1'], { cwd: root });
    assert.equal(h.status, 1);
    assert.match(h.stderr, /llama\.cpp rejected .*signal 6/);
    const missing = run(['benchmark', 'engine', '--model', join(root, 'nope.gguf')], { cwd: root });
    assert.equal(missing.status, 1);
    assert.equal(run(['benchmark', 'engine'], { cwd: root }).status, 2);
    assert.equal(run(['benchmark', 'engine', '--model', m, '--parallel', '0'], { cwd: root }).status,
      2);
  } finally {
    removeDir(root);
  }
});
