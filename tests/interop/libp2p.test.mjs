// SPDX-License-Identifier: MIT
// Interop with js-libp2p (libp2p 3, @libp2p/tcp, @chainsafe/libp2p-noise, @chainsafe/libp2p-yamux,
// @libp2p/identify, @libp2p/ping, @libp2p/kad-dht, @libp2p/pnet), versions locked in
// package-lock.json: a real implementation no one on this project wrote talks to ours.
//   - js dials our daemon and ours dials js (the daemon's --bootstrap, `democritus ping`);
//   - ping both ways; identify shows the right protocols and agent on both sides;
//   - DHT PUT/GET and PROVIDE/FIND_PROVIDERS cross implementations both ways, on
//     /democritus/kad/1.0.0 and, with --ipfs-dht true, on /ipfs/kad/1.0.0 (our side through the
//     daemon as a DHT server, through `democritus dht ...`, and a daemon's own --provide);
//     /democritus/ values are signed envelopes that js seals and opens with libp2p's own
//     RecordEnvelope (@libp2p/peer-record), so each side checks the other's signatures;
//   - IPNS: js makes a real IPNS record for its key (DAG-CBOR data by cborg, signed by
//     @libp2p/crypto; the `ipns` package is not installed - its releases want other versions of
//     cborg, multiformats and interface-datastore than libp2p 3 brings), our daemon stores and
//     serves it, and refuses a tampered one;
//   - pnet: with the same PSK both sides connect, with another PSK neither can.
// Node 20 lacks Promise.withResolvers, which js-libp2p 3 uses: polyfilled first.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

const { test, after } = await import('node:test');
const assert = (await import('node:assert/strict')).default;
const { execFile } = await import('node:child_process');
const { writeFileSync } = await import('node:fs');
const { randomBytes } = await import('node:crypto');
const { join } = await import('node:path');
const lib = await import('../e2e/lib.mjs');
const { BIN, startDaemon, tempDir, removeDir, loopbackFlags, parseReady, killAll, waitFor, cleanEnv } = lib;
const { createLibp2p } = await import('libp2p');
const { tcp } = await import('@libp2p/tcp');
const { noise } = await import('@chainsafe/libp2p-noise');
const { yamux } = await import('@chainsafe/libp2p-yamux');
const { identify, identifyPush } = await import('@libp2p/identify');
const { ping } = await import('@libp2p/ping');
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht');
const { preSharedKey } = await import('@libp2p/pnet');
const { multiaddr } = await import('@multiformats/multiaddr');
const { peerIdFromString, peerIdFromPublicKey } = await import('@libp2p/peer-id');
const { generateKeyPair } = await import('@libp2p/crypto/keys');
const { RecordEnvelope } = await import('@libp2p/peer-record');
const cborg = await import('cborg');
const { CID } = await import('multiformats/cid');
const { sha256 } = await import('multiformats/hashes/sha2');

const enc = new TextEncoder();
const dec = new TextDecoder();
const root = tempDir('dc-interop-');
after(() => { killAll(); removeDir(root); });

// ---- records: protobuf by hand, Democritus envelopes, IPNS ----------------------------------

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function pbVarint(v) {
  let n = BigInt(v);
  const out = [];
  while (n >= 0x80n) { out.push(Number(n & 0x7fn) | 0x80); n >>= 7n; }
  out.push(Number(n));
  return Uint8Array.from(out);
}

const pbBytes = (field, b) => concat([pbVarint((field << 3) | 2), pbVarint(b.length), b]);
const pbUint = (field, v) => concat([pbVarint(field << 3), pbVarint(v)]);

// Decodes a flat protobuf message into { field: BigInt | Uint8Array } (last one wins).
function pbFields(buf) {
  const f = {};
  let i = 0;
  const varint = () => {
    let v = 0n;
    for (let s = 0n; ; s += 7n) {
      if (i >= buf.length || s > 63n) throw new Error('bad varint');
      const b = buf[i++];
      v |= BigInt(b & 0x7f) << s;
      if (!(b & 0x80)) return v;
    }
  };
  while (i < buf.length) {
    const tag = Number(varint());
    if ((tag & 7) === 0) f[tag >> 3] = varint();
    else if ((tag & 7) === 2) {
      const n = Number(varint());
      if (i + n > buf.length) throw new Error('truncated');
      f[tag >> 3] = buf.subarray(i, i + n);
      i += n;
    } else throw new Error('unexpected wire type');
  }
  return f;
}

// A Democritus record (docs/protocols.md): an RFC 0002 envelope sealed by js-libp2p itself.
const DC_DOMAIN = 'democritus-record';
const DC_TYPE = enc.encode('/democritus/record/1');

async function democritusRecord(privateKey, key, body, seq = BigInt(Date.now())) {
  const payload = concat([pbBytes(1, enc.encode(key)), pbUint(2, seq),
    pbUint(3, BigInt(Date.now() + 3600000)), pbBytes(4, enc.encode(body))]);
  const env = await RecordEnvelope.seal({ domain: DC_DOMAIN, codec: DC_TYPE, marshal: () => payload },
    privateKey);
  return env.marshal();
}

// Opens a record as js's validator does; returns { body, seq } or throws.
async function democritusOpen(key, value) {
  const env = await RecordEnvelope.openAndCertify(value, DC_DOMAIN);
  if (dec.decode(env.payloadType) !== dec.decode(DC_TYPE)) throw new Error('payload type');
  const p = pbFields(env.payload);
  const text = dec.decode(key);
  if (text.split('/').at(-1) !== peerIdFromPublicKey(env.publicKey).toString()) {
    throw new Error('the key does not end with the signer\'s PeerId');
  }
  if (p[1] == null || dec.decode(p[1]) !== text) throw new Error('signed for another key');
  if (!(p[3] > BigInt(Date.now()))) throw new Error('expired');
  return { body: dec.decode(p[4] ?? new Uint8Array()), seq: p[2] ?? 0n };
}

function democritusSelect(key, values) {
  let best = 0;
  let bestSeq = -1n;
  values.forEach((v, i) => {
    const seq = pbFields(RecordEnvelope.createFromProtobuf(v).payload)[2] ?? 0n;
    if (seq > bestSeq) { best = i; bestSeq = seq; }
  });
  return best;
}

// An IPNS record (IPNS record spec): signed DAG-CBOR data plus the V1 copies of its fields.
// 'tamper' changes the Value after signing (data and V1 copy alike): only the signature can
// tell.
async function ipnsRecord(privateKey, value, seq, { tamper = null } = {}) {
  const validity = enc.encode(new Date(Date.now() + 3600000).toISOString().replace(/Z$/, '000000Z'));
  const fields = (v) => ({ Value: enc.encode(v), Validity: validity, ValidityType: 0,
    Sequence: BigInt(seq), TTL: 60000000000n });
  const signedData = cborg.encode(fields(value));
  const sig = await privateKey.sign(concat([enc.encode('ipns-signature:'), signedData]));
  const shown = tamper ?? value;
  const data = tamper ? cborg.encode(fields(tamper)) : signedData;
  return concat([pbBytes(1, enc.encode(shown)), pbBytes(2, sig), pbUint(3, 0), pbBytes(4, validity),
    pbUint(5, seq), pbUint(6, 60000000000n), pbBytes(8, sig), pbBytes(9, data)]);
}

// A js-libp2p node on loopback. Our records live under /democritus/: js validates them as ours
// does (democritusOpen) and picks the highest seq. js checks what it PUTs itself, so its /ipns
// validator lets everything through: the IPNS test is about what ours accepts. 'lax' does the
// same for /democritus/, to send ours records it must refuse.
async function jsNode({ psk, protocol = '/democritus/kad/1.0.0', push = false, privateKey,
  lax = false } = {}) {
  return createLibp2p({
    ...(privateKey ? { privateKey } : {}),
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(psk ? { connectionProtector: preSharedKey({ psk }) } : {}),
    // Our CLI makes a short-lived connection per command from 127.0.0.1: lift js's
    // 5-per-second inbound rate limit so back-to-back commands are not refused.
    connectionManager: { inboundConnectionThreshold: 1000 },
    services: {
      identify: identify(),
      ...(push ? { identifyPush: identifyPush() } : {}),
      ping: ping(),
      dht: kadDHT({
        protocol,
        clientMode: false,
        peerInfoMapper: passthroughMapper, // keep loopback addresses
        validators: {
          democritus: lax ? async () => {} : async (key, value) => { await democritusOpen(key, value); },
          ipns: async () => {},
        },
        selectors: { democritus: democritusSelect, ipns: () => 0 },
      }),
    },
  });
}

// Runs `democritus <args>` without blocking js's event loop (the js node must keep answering).
function dc(args, timeout = 30000) {
  return new Promise((resolve) => {
    execFile(BIN, args, { encoding: 'utf8', timeout, env: cleanEnv() }, (err, stdout, stderr) => {
      resolve({ status: err ? (err.code ?? 1) : 0, stdout, stderr });
    });
  });
}

function pskText() {
  return `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}\n`;
}

async function newCid(tag) {
  return CID.createV1(0x55, await sha256.digest(enc.encode(`${tag}-${Math.random()}`)));
}

async function daemon(name, extra = []) {
  const d = startDaemon([...loopbackFlags(join(root, name)), ...extra]);
  const ready = parseReady(await d.ready);
  return { ...d, peer: ready.peer, addr: ready.p2p.split(',')[0] };
}

async function stop(d) {
  d.proc.kill('SIGTERM');
  const { code } = await d.exited;
  assert.equal(code, 0, `daemon exit code; stderr:\n${d.stderr()}`);
}

// 'key' is text or bytes, 'value' bytes. True when a peer answered the PUT_VALUE with the
// record (FIND_NODE answers of the lookup before it do not count).
async function jsPut(node, key, value) {
  let ok = false;
  const k = typeof key === 'string' ? enc.encode(key) : key;
  try {
    for await (const ev of node.services.dht.put(k, value)) {
      if (ev.name === 'PEER_RESPONSE' && ev.record != null &&
        Buffer.from(ev.record.value).equals(Buffer.from(value))) ok = true;
    }
  } catch { /* no peer took it */ }
  return ok;
}

// The value js finds for 'key' (bytes), or null.
async function jsGet(node, key) {
  for await (const ev of node.services.dht.get(enc.encode(key))) {
    if (ev.name === 'VALUE') return ev.value;
  }
  return null;
}

async function jsProvide(node, cid) {
  for await (const ev of node.services.dht.provide(cid)) { void ev; }
}

async function jsFindProviders(node, cid) {
  const found = new Set();
  for await (const ev of node.services.dht.findProviders(cid)) {
    if (ev.name === 'PROVIDER') for (const p of ev.providers) found.add(p.id.toString());
  }
  return found;
}

test('js dials ours: ping, identify (protocols, agent) both ways, identify push', async () => {
  const a = await daemon('a');
  const js = await jsNode({ push: true });
  try {
    const rtt = await js.services.ping.ping(multiaddr(a.addr));
    assert.ok(rtt >= 0, 'js pinged our daemon');
    const pid = peerIdFromString(a.peer);
    const info = await waitForAsync(async () => {
      const p = await js.peerStore.get(pid);
      return p.metadata.get('AgentVersion') ? p : null;
    }, 10000, 'identify of ours in js');
    assert.match(dec.decode(info.metadata.get('AgentVersion')), /^democritus\/\d+\.\d+\.\d+/);
    assert.equal(dec.decode(info.metadata.get('ProtocolVersion')), 'ipfs/0.1.0');
    for (const p of ['/ipfs/id/1.0.0', '/ipfs/id/push/1.0.0', '/ipfs/ping/1.0.0',
      '/democritus/kad/1.0.0']) {
      assert.ok(info.protocols.includes(p), `js sees ${p} in ${info.protocols}`);
    }
    await waitFor(() => a.stderr().includes(`identified ${js.peerId}: agent "js-libp2p/`), 10000,
      'ours identified js');
    // js registers a protocol while connected: its identify push reaches ours, which logs the
    // peer as identified again, with one protocol more.
    const seen = () => [...a.stderr().matchAll(
      new RegExp(`identified ${js.peerId}: agent "[^"]*", (\\d+) protocol`, 'g'))].map((m) => +m[1]);
    const before = seen();
    await js.handle('/democritus/interop-push/1.0.0', () => {});
    await waitFor(() => seen().length > before.length && seen().at(-1) > before.at(-1), 10000,
      'identify push from js stored by ours');
    // js pings again over the connection it has (by PeerId). js allows one outbound ping stream
    // per connection and counts the first until its close has been processed: retry briefly.
    assert.ok(await waitForAsync(async () => (await js.services.ping.ping(pid)) + 1, 5000,
      'second ping') >= 1);
  } finally {
    await js.stop();
    await stop(a);
  }
});

test('ours dials js: daemon bootstrap and `democritus ping` (identify + ping)', async () => {
  const js = await jsNode();
  try {
    const jsAddr = js.getMultiaddrs()[0].toString();
    const r = await dc(['ping', jsAddr, '-n', '3']);
    assert.equal(r.status, 0, `ping failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^peer ${js.peerId}$`, 'm'));
    assert.match(r.stdout, /^agent js-libp2p\/3\.3\.9 /m);
    const protos = /^protocols (.*)$/m.exec(r.stdout)[1].split(',');
    for (const p of ['/ipfs/id/1.0.0', '/ipfs/ping/1.0.0', '/democritus/kad/1.0.0']) {
      assert.ok(protos.includes(p), `ours sees ${p} in ${protos}`);
    }
    assert.equal((r.stdout.match(/^pong from /mg) || []).length, 3);

    const a = await daemon('b', ['--bootstrap', jsAddr]);
    await waitFor(() => a.stderr().includes(`connected to ${js.peerId} (outbound`), 10000,
      'daemon dialed js');
    await waitFor(() => a.stderr().includes(`identified ${js.peerId}: agent "js-libp2p/`), 10000,
      'daemon identified js');
    // js can use the connection our daemon opened. Our daemon pings js once identified, and
    // js's stream accounting can count a ping stream for a moment after it ended (see above):
    // retry briefly.
    assert.ok(await waitForAsync(async () => (await js.services.ping.ping(peerIdFromString(a.peer))) + 1,
      5000, 'js pings ours') >= 1);
    await stop(a);
  } finally {
    await js.stop();
  }
});

test('DHT /democritus/kad/1.0.0: js PUT/PROVIDE -> ours GET/FINDPROVS, ours PUT/PROVIDE -> js', async () => {
  const a = await daemon('c');
  const jsKey = await generateKeyPair('Ed25519');
  const js = await jsNode({ privateKey: jsKey });
  try {
    await js.dial(multiaddr(a.addr));
    await waitForAsync(async () => (await js.services.dht.routingTable.size) > 0 || null, 10000,
      'js has our daemon in its routing table');
    const jsAddr = js.getMultiaddrs()[0].toString();

    // js -> ours: js stores a record it sealed on our daemon (a DHT server); our CLI reads it
    // through the daemon, checks the signature and prints the body.
    const key = `/democritus/interop/${js.peerId}`;
    assert.ok(await jsPut(js, key, await democritusRecord(jsKey, key, 'from-js')),
      'js PUT got an answer');
    let r = await dc(['dht', 'get', key, '--bootstrap', a.addr]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'from-js\n');
    // A record js signed for a key that is not its own is refused by ours.
    const stolen = `/democritus/interop/${a.peer}`;
    const forged = await democritusRecord(jsKey, stolen, 'forged');
    const lax = await jsNode({ lax: true }); // js would refuse to send it otherwise
    try {
      await lax.dial(multiaddr(a.addr));
      await waitForAsync(async () => (await lax.services.dht.routingTable.size) > 0 || null,
        10000, 'the lax js node knows our daemon');
      assert.equal(await jsPut(lax, stolen, forged), false, 'ours refused the forged record');
      r = await dc(['dht', 'get', stolen, '--bootstrap', a.addr]);
      assert.equal(r.status, 1, `nothing stored under ${stolen}: ${r.stdout}`);
    } finally {
      await lax.stop();
    }
    const cid = await newCid('js');
    await jsProvide(js, cid);
    r = await dc(['dht', 'findprovs', cid.toString(), '--bootstrap', a.addr]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^${cid} ${js.peerId} /ip4/127\\.0\\.0\\.1/tcp/`, 'm'));
    // ...and directly from js as the DHT server.
    r = await dc(['dht', 'get', key, '--bootstrap', jsAddr]);
    assert.equal(r.stdout, 'from-js\n', r.stderr);
    r = await dc(['dht', 'findprovs', cid.toString(), '--bootstrap', jsAddr]);
    assert.match(r.stdout, new RegExp(`^${cid} ${js.peerId}`, 'm'), r.stderr);
    // A newer version replaces it; an older one (lower seq) does not (js keeps
    // the stale one itself: its put stores locally first; our CLI picks the highest seq).
    assert.ok(await jsPut(js, key, await democritusRecord(jsKey, key, 'from-js-2')));
    await jsPut(js, key, await democritusRecord(jsKey, key, 'stale', 1n));
    r = await dc(['dht', 'get', key, '--bootstrap', a.addr]);
    assert.equal(r.stdout, 'from-js-2\n', r.stderr);

    // ours -> js: our CLI stores and provides with js as its only entry point; js finds both.
    // The CLI signs with the node key of its state dir, whose PeerId ends the key; js checks
    // our envelope with RecordEnvelope.openAndCertify.
    const cliDir = join(root, 'cli-c');
    r = await dc(['id', '--state-dir', cliDir]);
    assert.equal(r.status, 0, r.stderr);
    const key2 = `/democritus/interop/${r.stdout.trim()}`;
    r = await dc(['dht', 'put', key2, 'from-ours', '--state-dir', cliDir, '--bootstrap', jsAddr]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /stored on [1-9]\d* peer\(s\)/);
    assert.equal((await democritusOpen(enc.encode(key2), await jsGet(js, key2))).body, 'from-ours');
    const cid2 = await newCid('ours');
    r = await dc(['dht', 'provide', cid2.toString(), '--bootstrap', jsAddr]);
    assert.equal(r.status, 0, r.stderr);
    const provs = await jsFindProviders(js, cid2);
    assert.ok(provs.size >= 1, 'js found the provider our CLI announced');

    // A daemon that provides a CID of its own (--provide) is found by js as its provider.
    const cid3 = await newCid('daemon');
    const b = await daemon('d', ['--bootstrap', jsAddr, '--provide', cid3.toString()]);
    await waitForAsync(async () => (await jsFindProviders(js, cid3)).has(b.peer) || null, 15000,
      'js finds the daemon as provider');
    await stop(b);

  } finally {
    await js.stop();
    await stop(a);
  }
});

test('DHT /ipfs/kad/1.0.0 with --ipfs-dht true: PUT/GET and PROVIDE/FINDPROVS both ways', async () => {
  const a = await daemon('e', ['--ipfs-dht', 'true']);
  const jsKey = await generateKeyPair('Ed25519');
  const js = await jsNode({ protocol: '/ipfs/kad/1.0.0', privateKey: jsKey });
  try {
    assert.match(a.stderr(), /DHT: \/ipfs\/kad\/1\.0\.0 in server mode/);
    await js.dial(multiaddr(a.addr));
    await waitForAsync(async () => (await js.services.dht.routingTable.size) > 0 || null, 10000,
      'js has our daemon in its /ipfs/kad routing table');
    const key = `/democritus/ipfs-kad/${js.peerId}`;
    assert.ok(await jsPut(js, key, await democritusRecord(jsKey, key, 'v1')));
    let r = await dc(['dht', 'get', key, '--ipfs-dht', 'true', '--bootstrap', a.addr]);
    assert.equal(r.stdout, 'v1\n', r.stderr);
    const cid = await newCid('ipfs');
    r = await dc(['dht', 'provide', cid.toString(), '--ipfs-dht', 'true', '--bootstrap', a.addr]);
    assert.equal(r.status, 0, r.stderr);
    const provs = await jsFindProviders(js, cid);
    assert.ok(provs.size >= 1, 'js found the provider through our daemon');
  } finally {
    await js.stop();
    await stop(a);
  }
});

test('IPNS: js PUTs a real IPNS record for its key, ours validates, stores and serves it; a tampered one is refused', async () => {
  const a = await daemon('g');
  const jsKey = await generateKeyPair('Ed25519');
  const js = await jsNode({ privateKey: jsKey });
  let stopped = false;
  try {
    await js.dial(multiaddr(a.addr));
    await waitForAsync(async () => (await js.services.dht.routingTable.size) > 0 || null, 10000,
      'js has our daemon in its routing table');
    // /ipns/<binary PeerId>; the CLI takes the PeerId as text.
    const key = concat([enc.encode('/ipns/'), js.peerId.toMultihash().bytes]);
    const name = `/ipns/${js.peerId}`;
    const value = `/ipfs/${await newCid('ipns')}`;

    // Tampered: the Value was changed after signing. Ours resets the PUT stream, stores nothing.
    const bad = await ipnsRecord(jsKey, value, 1, { tamper: '/ipfs/bafkqaaa' });
    assert.equal(await jsPut(js, key, bad), false, 'ours refused the tampered record');
    let r = await dc(['dht', 'get', name, '--bootstrap', a.addr]);
    assert.equal(r.status, 1, `no valid record anywhere (js holds the tampered one): ${r.stdout}`);

    // The real record: stored by ours. With js gone (it holds the record too), our CLI can
    // only find it on our daemon: it prints the Value, and with --raw the record byte for byte.
    const good = await ipnsRecord(jsKey, value, 2);
    assert.ok(await jsPut(js, key, good), 'ours stored the IPNS record');
    await js.stop();
    stopped = true;
    r = await dc(['dht', 'get', name, '--bootstrap', a.addr]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${value}\n`);
    const raw = await new Promise((resolve) => {
      execFile(BIN, ['dht', 'get', '--raw', name, '--bootstrap', a.addr],
        { encoding: 'buffer', timeout: 30000, env: cleanEnv() }, (err, stdout) => resolve(stdout));
    });
    assert.ok(raw.equals(Buffer.concat([Buffer.from(good), Buffer.from('\n')])),
      'our daemon serves the record byte for byte');
  } finally {
    if (!stopped) await js.stop();
    await stop(a);
  }
});

test('pnet: same PSK connects both ways, another PSK fails both ways', async () => {
  const k1 = pskText();
  const k2 = pskText();
  const f1 = join(root, 'psk1.key');
  const f2 = join(root, 'psk2.key');
  writeFileSync(f1, k1, { mode: 0o600 });
  writeFileSync(f2, k2, { mode: 0o600 });
  const a = await daemon('f', ['--private-swarm-key-file', f1]);
  const jsSame = await jsNode({ psk: enc.encode(k1) });
  const jsOther = await jsNode({ psk: enc.encode(k2) });
  try {
    // js -> ours.
    assert.ok(await jsSame.services.ping.ping(multiaddr(a.addr)) >= 0, 'same key: js reaches ours');
    await assert.rejects(jsOther.services.ping.ping(multiaddr(a.addr)), 'other key: js cannot');
    await waitFor(() => /inbound connection from .* failed during .*private network/.test(a.stderr()),
      10000, 'ours logs the refusal');
    // ours -> js.
    let r = await dc(['ping', jsSame.getMultiaddrs()[0].toString(), '-n', '1',
      '--private-swarm-key-file', f1]);
    assert.equal(r.status, 0, `same key: ours reaches js\n${r.stdout}${r.stderr}`);
    r = await dc(['ping', jsOther.getMultiaddrs()[0].toString(), '-n', '1',
      '--private-swarm-key-file', f1], 20000);
    assert.notEqual(r.status, 0, 'other key: ours cannot reach js');
    r = await dc(['ping', jsSame.getMultiaddrs()[0].toString(), '-n', '1'], 20000);
    assert.notEqual(r.status, 0, 'no key: ours cannot reach a js node in a private network');
    assert.ok(!a.stderr().includes(k1.split('\n')[2]), 'the key is never logged');
  } finally {
    await jsSame.stop();
    await jsOther.stop();
    await stop(a);
  }
});

async function waitForAsync(fn, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
