// SPDX-License-Identifier: MIT
// Hostile peers against one daemon, over raw TCP: 1,000 idle connections, half-finished
// handshakes (multistream only; Noise message 1 and then silence), HTTP instead of libp2p, an
// oversized multistream message, a Noise message 3 that does not decrypt and an oversized one. The daemon must close each bad connection (idle and
// half-finished ones at the 10 s handshake timeout), keep its memory bounded, and still serve
// a real peer afterwards (`democritus ping`: identify + /ipfs/ping/1.0.0).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { startDaemon, tempDir, removeDir, loopbackFlags, parseReady, killAll, run } from './lib.mjs';

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]);
}

// Opens a socket to the daemon, writes 'bytes' (if any) and resolves with { closed }, a promise that
// settles when the daemon closes it (with the ms it took) — or rejects after 'ms'.
function hostile(port, bytes, ms = 20000) {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      if (bytes) s.write(bytes);
      const t0 = Date.now();
      const closed = new Promise((res, rej) => {
        const timer = setTimeout(() => { s.destroy(); rej(new Error('daemon kept the socket')); }, ms);
        s.on('close', () => { clearTimeout(timer); res(Date.now() - t0); });
      });
      resolve({ closed }); // wrapped: a promise would be adopted, not returned
    });
    s.on('error', () => {}); // resets are expected
    s.on('data', () => {}); // the daemon's own negotiation bytes
    s.once('error', reject);
  });
}

function mss(...lines) {
  const parts = [];
  for (const l of lines) {
    const body = Buffer.from(`${l}\n`);
    parts.push(Buffer.from([body.length]), body);
  }
  return Buffer.concat(parts);
}

test('hostile peers: idle floods, half handshakes, oversized and garbage frames', { timeout: 60000 },
  async () => {
    const root = tempDir('dc-hostile-');
    try {
      const d = startDaemon([...loopbackFlags(join(root, 'a')), '--no-model']);
      const ready = parseReady(await d.ready);
      const addr = ready.p2p.split(',')[0];
      const port = Number(/\/tcp\/(\d+)\//.exec(addr)[1]);
      const rss0 = rssKiB(d.proc.pid);

      // Bad input is refused at once.
      const oversized = Buffer.concat([mss('/multistream/1.0.0'),
        Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), randomBytes(4096)]);
      // Noise message 1 (an ephemeral key), then a message 3 that does not decrypt.
      const garbageNoise = Buffer.concat([mss('/multistream/1.0.0', '/noise'),
        Buffer.from([0, 32]), randomBytes(32), Buffer.from([0, 200]), randomBytes(200)]);
      const oversizedNoise = Buffer.concat([mss('/multistream/1.0.0', '/noise'),
        Buffer.from([0, 32]), randomBytes(32), Buffer.from([0xff, 0xff]), randomBytes(65535)]);
      const quick = await Promise.all([oversized, garbageNoise, oversizedNoise].map(
        async (b) => (await hostile(port, b)).closed));
      for (const ms of quick) assert.ok(ms < 2000, `bad input closed in ${ms} ms`);

      // 1,000 idle sockets and half-finished handshakes, all at once.
      const half1 = mss('/multistream/1.0.0', '/noise');
      const half2 = Buffer.concat([half1, Buffer.from([0, 32]), randomBytes(32)]);
      const waits = [];
      for (let i = 0; i < 1000; i++) {
        const bytes = i % 10 === 1 ? half1 : i % 10 === 2 ? half2
          : i % 10 === 3 ? Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n') : null;
        waits.push((await hostile(port, bytes)).closed);
      }
      // Beyond the handshake limit they are closed at accept; the rest at the timeout.
      const times = await Promise.all(waits);
      const slowest = Math.max(...times);
      assert.ok(slowest < 15000, `every hostile socket closed (slowest after ${slowest} ms)`);

      // Still healthy: a real peer connects, identifies and pings.
      const r = run(['ping', addr, '-n', '2'], { timeout: 20000 });
      assert.equal(r.status, 0, `ping after the attack:\n${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /^agent democritus\//m);
      const rss1 = rssKiB(d.proc.pid);
      assert.ok(rss1 - rss0 < 64 * 1024, `memory grew by ${rss1 - rss0} KiB`);
      console.log(`# hostile: RSS ${rss0} KiB -> ${rss1} KiB; slowest close ${slowest} ms`);

      d.proc.kill('SIGTERM');
      const { code } = await d.exited;
      assert.equal(code, 0, d.stderr());
    } finally {
      killAll();
      removeDir(root);
    }
  });
