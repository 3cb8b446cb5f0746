// SPDX-License-Identifier: MIT
// Hostile peers against one daemon, over raw TCP: 1,000 idle connections, half-finished
// handshakes (multistream only; Noise message 1 and then silence), HTTP instead of libp2p, an
// oversized multistream message, a Noise message 3 that does not decrypt and an oversized
// one; and, past a real Noise handshake (a minimal Noise XX initiator below, on node:crypto),
// yamux violations: DATA beyond the receive window the daemon granted, and window updates
// that would overflow the send window past 2^32-1. The daemon must close each bad connection
// (idle and half-finished ones at the 10 s handshake timeout; yamux violations at once, after
// a Go Away with the protocol-error code), keep its memory bounded, and still serve a real
// peer afterwards (`democritus ping`: identify + /ipfs/ping/1.0.0).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import {
  randomBytes, createHash, createHmac, createCipheriv, createDecipheriv, generateKeyPairSync,
  diffieHellman, createPublicKey, sign,
} from 'node:crypto';
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

// ---- a minimal libp2p Noise XX initiator (Noise_XX_25519_ChaChaPoly_SHA256) ----------------

const EMPTY = Buffer.alloc(0);
const sha256 = (...parts) => parts.reduce((h, p) => h.update(p), createHash('sha256')).digest();
const hmac = (k, ...parts) => parts.reduce((m, p) => m.update(p), createHmac('sha256', k)).digest();
function hkdf2(ck, ikm) {
  const t = hmac(ck, ikm);
  const o1 = hmac(t, Buffer.from([1]));
  return [o1, hmac(t, o1, Buffer.from([2]))];
}
function aeadNonce(n) {
  const b = Buffer.alloc(12);
  b.writeBigUInt64LE(BigInt(n), 4);
  return b;
}
function seal(k, n, ad, pt) {
  const c = createCipheriv('chacha20-poly1305', k, aeadNonce(n), { authTagLength: 16 });
  c.setAAD(ad, { plaintextLength: pt.length });
  return Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
}
function unseal(k, n, ad, ct) {
  const d = createDecipheriv('chacha20-poly1305', k, aeadNonce(n), { authTagLength: 16 });
  d.setAAD(ad, { plaintextLength: ct.length - 16 });
  d.setAuthTag(ct.subarray(ct.length - 16));
  return Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]);
}
const rawPub = (key) => Buffer.from(key.export({ format: 'jwk' }).x, 'base64url');
function x25519() {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  return { priv: privateKey, pub: rawPub(publicKey) };
}
function dh(priv, pub) {
  const publicKey = createPublicKey({
    key: { kty: 'OKP', crv: 'X25519', x: pub.toString('base64url') }, format: 'jwk',
  });
  return diffieHellman({ privateKey: priv, publicKey });
}
function pbBytes(field, b) {
  const len = [];
  for (let n = b.length; ; n >>>= 7) {
    if (n < 0x80) { len.push(n); break; }
    len.push((n & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...len]), b]);
}
const u16 = (n) => Buffer.from([n >> 8, n & 0xff]);

class Symmetric {
  constructor() {
    this.h = Buffer.from('Noise_XX_25519_ChaChaPoly_SHA256'); // exactly 32 bytes: h = name
    this.ck = this.h;
    this.k = null;
    this.n = 0;
    this.mixHash(EMPTY); // empty prologue
  }
  mixHash(d) { this.h = sha256(this.h, d); }
  mixKey(ikm) { [this.ck, this.k] = hkdf2(this.ck, ikm); this.n = 0; }
  encryptAndHash(pt) {
    const ct = this.k ? seal(this.k, this.n++, this.h, pt) : pt;
    this.mixHash(ct);
    return ct;
  }
  decryptAndHash(ct) {
    const pt = this.k ? unseal(this.k, this.n++, this.h, ct) : ct;
    this.mixHash(ct);
    return pt;
  }
}

// A TCP connection that hands out received bytes on demand.
function byteReader(sock) {
  let buf = EMPTY;
  let wake = null;
  const state = { closed: false };
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); if (wake) wake(); });
  sock.on('close', () => { state.closed = true; if (wake) wake(); });
  sock.on('error', () => {});
  state.take = async (n) => {
    while (buf.length < n) {
      if (state.closed) throw new Error('connection closed');
      await new Promise((r) => { wake = r; });
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  return state;
}

// Dials the daemon, runs multistream-select "/noise", the Noise XX handshake with a fresh
// Ed25519 identity, and multistream-select "/yamux/1.0.0" inside the session. Resolves with
// { sock, send(plaintext), frames: the yamux frames received, next(pred, ms) } where next
// waits for a frame matching pred (or for the close: null).
async function yamuxSession(port) {
  const sock = await new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
  const rd = byteReader(sock);
  const readMss = async () => (await rd.take((await rd.take(1))[0])).toString();
  sock.write(mss('/multistream/1.0.0', '/noise'));
  assert.equal(await readMss(), '/multistream/1.0.0\n');
  assert.equal(await readMss(), '/noise\n');

  const sym = new Symmetric();
  const e = x25519();
  sym.mixHash(e.pub);
  sym.encryptAndHash(EMPTY);
  sock.write(Buffer.concat([u16(32), e.pub]));
  const m2 = await rd.take((await rd.take(2)).readUInt16BE(0));
  const re = m2.subarray(0, 32);
  sym.mixHash(re);
  sym.mixKey(dh(e.priv, re));
  const rs = sym.decryptAndHash(m2.subarray(32, 80));
  sym.mixKey(dh(e.priv, rs));
  sym.decryptAndHash(m2.subarray(80)); // the daemon's identity payload: not checked here
  const s = x25519();
  const id = generateKeyPairSync('ed25519');
  const payload = Buffer.concat([
    pbBytes(1, Buffer.concat([Buffer.from([0x08, 0x01]), pbBytes(2, rawPub(id.publicKey))])),
    pbBytes(2, sign(null, Buffer.concat([Buffer.from('noise-libp2p-static-key:'), s.pub]),
      id.privateKey)),
  ]);
  const c1 = sym.encryptAndHash(s.pub);
  sym.mixKey(dh(s.priv, re));
  const c2 = sym.encryptAndHash(payload);
  sock.write(Buffer.concat([u16(c1.length + c2.length), c1, c2]));
  const [kSend, kRecv] = hkdf2(sym.ck, EMPTY);

  let sn = 0;
  let rn = 0;
  const send = (pt) => {
    for (let off = 0; off < pt.length; off += 65000) {
      const ct = seal(kSend, sn++, EMPTY, pt.subarray(off, off + 65000));
      sock.write(Buffer.concat([u16(ct.length), ct]));
    }
  };
  // Plaintext, decrypted as it comes.
  let plain = EMPTY;
  let wake = null;
  let ended = false;
  (async () => {
    try {
      for (;;) {
        const ct = await rd.take((await rd.take(2)).readUInt16BE(0));
        plain = Buffer.concat([plain, unseal(kRecv, rn++, EMPTY, ct)]);
        if (wake) wake();
      }
    } catch {
      ended = true;
      if (wake) wake();
    }
  })();
  const takePlain = async (n) => {
    while (plain.length < n) {
      if (ended) throw new Error('connection closed');
      await new Promise((r) => { wake = r; });
    }
    const out = plain.subarray(0, n);
    plain = plain.subarray(n);
    return out;
  };
  send(mss('/multistream/1.0.0', '/yamux/1.0.0'));
  const readMssPlain = async () => (await takePlain((await takePlain(1))[0])).toString();
  assert.equal(await readMssPlain(), '/multistream/1.0.0\n');
  assert.equal(await readMssPlain(), '/yamux/1.0.0\n');

  // Yamux frames from here on (the daemon opens its identify stream to us, among others).
  const frames = [];
  let frameWake = null;
  let closed = false;
  (async () => {
    try {
      for (;;) {
        const h = await takePlain(12);
        const f = { version: h[0], type: h[1], flags: h.readUInt16BE(2), id: h.readUInt32BE(4),
          length: h.readUInt32BE(8) };
        if (f.type === 0 && f.length > 0) await takePlain(f.length);
        frames.push(f);
        if (frameWake) frameWake();
      }
    } catch {
      closed = true;
      if (frameWake) frameWake();
    }
  })();
  const next = async (pred, ms = 5000) => {
    const t0 = Date.now();
    for (let i = 0; ; ) {
      for (; i < frames.length; i++) if (pred(frames[i])) return frames[i];
      if (closed) return null;
      if (Date.now() - t0 > ms) throw new Error('no such yamux frame in time');
      await new Promise((r) => { frameWake = r; setTimeout(r, 100); });
    }
  };
  const whenClosed = new Promise((r) => sock.on('close', r));
  return { sock, send, frames, next, whenClosed };
}

function yamuxFrame(type, flags, id, length) {
  const b = Buffer.alloc(12);
  b[1] = type;
  b.writeUInt16BE(flags, 2);
  b.writeUInt32BE(id, 4);
  b.writeUInt32BE(length, 8);
  return b;
}
const Y_DATA = 0, Y_WINDOW = 1, Y_GO_AWAY = 3, Y_SYN = 1, Y_ACK = 2, Y_PROTOCOL_ERROR = 1;

// The daemon must answer a yamux violation with Go Away (protocol error) and close at once.
async function expectGoAwayAndClose(sess, what) {
  const t0 = Date.now();
  const ga = await sess.next((f) => f.type === Y_GO_AWAY, 5000);
  assert.ok(ga !== null, `${what}: Go Away before the close`);
  assert.equal(ga.length, Y_PROTOCOL_ERROR, `${what}: Go Away code`);
  await Promise.race([sess.whenClosed,
    new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: socket kept`)), 5000))]);
  const ms = Date.now() - t0;
  assert.ok(ms < 2000, `${what}: closed in ${ms} ms`);
  console.log(`# hostile yamux, ${what}: Go Away (protocol error), closed in ${ms} ms`);
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

      // Past the handshake: DATA beyond the window the daemon granted on our stream (the
      // spec's 256 KiB plus what its ACK added), in one frame.
      {
        const sess = await yamuxSession(port);
        sess.send(yamuxFrame(Y_WINDOW, Y_SYN, 1, 0));
        const ack = await sess.next((f) => f.type === Y_WINDOW && f.id === 1 && (f.flags & Y_ACK));
        assert.ok(ack !== null, 'the daemon accepted our stream');
        const window = 256 * 1024 + ack.length;
        sess.send(Buffer.concat([yamuxFrame(Y_DATA, 0, 1, window + 1), randomBytes(4096)]));
        await expectGoAwayAndClose(sess, 'data beyond the window');
      }
      // Window updates that push our send window past 2^32-1: an error, not a wrap.
      {
        const sess = await yamuxSession(port);
        sess.send(yamuxFrame(Y_WINDOW, Y_SYN, 1, 0));
        assert.ok(await sess.next((f) => f.type === Y_WINDOW && f.id === 1 && (f.flags & Y_ACK)));
        for (let i = 0; i < 4; i++) sess.send(yamuxFrame(Y_WINDOW, 0, 1, 0x7fffffff));
        await expectGoAwayAndClose(sess, 'send window overflow');
      }

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
