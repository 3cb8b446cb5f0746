#!/usr/bin/env node
// SPDX-License-Identifier: MIT
// WebSocket and gRPC serving figures on a gguf-gen model, printed as a table:
//   - time to first token (p50/p90 of 40 requests, max_tokens 1) over WS, gRPC and REST SSE;
//   - one stream of 256 tokens: wall time per token over WS, gRPC and REST SSE (the same
//     engine serves all three, so the differences are the interfaces' own costs);
//   - 64 concurrent streaming clients on WS and on gRPC: errors and aggregate tokens/s;
//   - memory per idle connection: RSS growth of the daemon for 500 idle WebSockets and 200
//     idle HTTP/2 (gRPC) connections.
// Run from the repository root: DEMOCRITUS_BIN=build/rel/bin/democritus DC_BUILD_DIR=build/rel
// node bench/rpc.mjs (uses the npm clients of tests/interop/node_modules).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import http2 from 'node:http2';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'tests', 'interop', 'package.json'));
const WebSocket = require('ws');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { startModelDaemon, KEY } = await import(join(root, 'tests', 'interop', 'rpclib.mjs'));
const { removeDir } = await import(join(root, 'tests', 'e2e', 'lib.mjs'));

const pct = (v, p) => { const s = [...v].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const messages = [{ role: 'user', content: 'Tell me a long story about the sea.' }];

const srv = await startModelDaemon(['--parallel', '4']);
const pid = srv.d.proc.pid;
const def = protoLoader.loadSync(['democritus.proto'], { includeDirs: [join(root, 'proto')], keepCase: true, defaults: true, oneofs: true });
const pkg = grpc.loadPackageDefinition(def);
const md = new grpc.Metadata();
md.set('authorization', `Bearer ${KEY}`);

function wsOpen() {
  return new Promise((res, rej) => {
    const ws = new WebSocket(`${srv.ready.ws}/ws/chat`, { headers: { Authorization: `Bearer ${KEY}` } });
    ws.on('open', () => res(ws));
    ws.on('error', rej);
  });
}

// One WS chat; resolves { ttft, total, tokens }.
function wsChat(ws, id, extra) {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    let ttft = null;
    let tokens = 0;
    const on = (d) => {
      const m = JSON.parse(d);
      if (m.id !== id) return;
      if (m.type === 'token') { tokens++; if (ttft === null) ttft = performance.now() - t0; }
      if (m.type === 'error') { ws.off('message', on); rej(new Error(m.message)); }
      if (m.type === 'done') {
        ws.off('message', on);
        res({ ttft: ttft ?? performance.now() - t0, total: performance.now() - t0, tokens: m.usage.completion_tokens });
      }
    };
    ws.on('message', on);
    ws.send(JSON.stringify({ type: 'chat', id, messages, temperature: 0, ...extra }));
  });
}

function grpcChat(client, extra) {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    let ttft = null;
    let last;
    const call = client.Chat({ messages, temperature: 0, ...extra }, md);
    call.on('data', (c) => { if (ttft === null) ttft = performance.now() - t0; last = c; });
    call.on('error', rej);
    call.on('end', () => res({ ttft, total: performance.now() - t0, tokens: last.usage.completion_tokens }));
  });
}

async function restChat(extra) {
  const t0 = performance.now();
  const r = await fetch(`${srv.ready.rest}/v1/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'local', messages, temperature: 0, stream: true, stream_options: { include_usage: true }, ...extra }),
  });
  if (!r.ok) throw new Error(`REST ${r.status}`);
  let ttft = null;
  let text = '';
  const dec = new TextDecoder();
  for await (const chunk of r.body) {
    if (ttft === null) ttft = performance.now() - t0;
    text += dec.decode(chunk);
  }
  const m = /"completion_tokens":(\d+)/.exec(text);
  return { ttft, total: performance.now() - t0, tokens: m ? Number(m[1]) : NaN };
}

const out = [];
const ws = await wsOpen();
const client = new pkg.democritus.v1.Democritus(srv.ready.grpc, grpc.credentials.createInsecure());

// Warm-up.
await wsChat(ws, 'w', { max_tokens: 8 });
await grpcChat(client, { max_tokens: 8 });

// Time to first token.
for (const [name, f] of [['ws', (i) => wsChat(ws, `t${i}`, { max_tokens: 1 })], ['grpc', () => grpcChat(client, { max_tokens: 1 })], ['rest-sse', () => restChat({ max_tokens: 1 }).catch(() => null)]]) {
  const v = [];
  for (let i = 0; i < 40; i++) { const r = await f(i); if (r) v.push(r.ttft); }
  if (v.length) out.push(`ttft ${name}: p50 ${pct(v, 0.5).toFixed(2)} ms, p90 ${pct(v, 0.9).toFixed(2)} ms (n=${v.length})`);
}

// One long stream: wall time per generated token.
for (const [name, f] of [['ws', () => wsChat(ws, 'long', { max_tokens: 256 })], ['grpc', () => grpcChat(client, { max_tokens: 256 })], ['rest-sse', () => restChat({ max_tokens: 256 }).catch(() => null)]]) {
  const v = [];
  for (let i = 0; i < 3; i++) { const r = await f(); if (r && r.tokens > 0) v.push((r.total - r.ttft) / Math.max(1, r.tokens - 1)); }
  if (v.length) out.push(`stream ${name}: ${pct(v, 0.5).toFixed(3)} ms/token after the first (median of ${v.length}, 256 tokens)`);
}

// 64 concurrent streaming clients.
{
  const sockets = await Promise.all(Array.from({ length: 64 }, wsOpen));
  const t0 = performance.now();
  const rs = await Promise.allSettled(sockets.map((s, i) => wsChat(s, `c${i}`, { max_tokens: 32 })));
  const dt = (performance.now() - t0) / 1000;
  const ok = rs.filter((r) => r.status === 'fulfilled');
  const toks = ok.reduce((a, r) => a + r.value.tokens, 0);
  out.push(`64 concurrent ws streams: ${64 - ok.length} errors, ${toks} tokens in ${dt.toFixed(2)} s (${(toks / dt).toFixed(0)} tok/s)`);
  for (const s of sockets) s.close();
}
{
  const clients = Array.from({ length: 64 }, () => new pkg.democritus.v1.Democritus(srv.ready.grpc, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }));
  const t0 = performance.now();
  const rs = await Promise.allSettled(clients.map((c) => grpcChat(c, { max_tokens: 32 })));
  const dt = (performance.now() - t0) / 1000;
  const ok = rs.filter((r) => r.status === 'fulfilled');
  const toks = ok.reduce((a, r) => a + r.value.tokens, 0);
  const errs = rs.filter((r) => r.status === 'rejected').map((r) => r.reason.code);
  out.push(`64 concurrent grpc streams: ${errs.length} errors${errs.length ? ` (codes ${[...new Set(errs)]})` : ''}, ${toks} tokens in ${dt.toFixed(2)} s (${(toks / dt).toFixed(0)} tok/s)`);
  for (const c of clients) c.close();
}

// Memory per idle connection.
await sleep(300);
{
  const before = rss(pid);
  const sockets = [];
  for (let i = 0; i < 500; i++) sockets.push(await wsOpen());
  await sleep(500);
  const after = rss(pid);
  out.push(`idle ws: ${((after - before) / 500 / 1024).toFixed(1)} KiB per connection (RSS +${((after - before) / 1048576).toFixed(1)} MiB for 500)`);
  for (const s of sockets) s.terminate();
}
await sleep(500);
{
  const before = rss(pid);
  const sessions = [];
  const [host, port] = srv.ready.grpc.split(':');
  for (let i = 0; i < 200; i++) {
    const s = http2.connect(`http://${host}:${port}`);
    await new Promise((r) => s.once('remoteSettings', r));
    sessions.push(s);
  }
  await sleep(500);
  const after = rss(pid);
  out.push(`idle grpc (h2c): ${((after - before) / 200 / 1024).toFixed(1)} KiB per connection (RSS +${((after - before) / 1048576).toFixed(1)} MiB for 200)`);
  for (const s of sessions) s.destroy();
}

ws.close();
client.close();
srv.d.proc.kill('SIGTERM');
await srv.d.exited;
removeDir(srv.root);
console.log(out.join('\n'));
