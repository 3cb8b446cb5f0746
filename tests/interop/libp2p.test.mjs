// SPDX-License-Identifier: MIT
// Interop with js-libp2p (libp2p 3, @libp2p/tcp, @chainsafe/libp2p-noise, @chainsafe/libp2p-yamux,
// @libp2p/identify, @libp2p/ping, @libp2p/kad-dht, @libp2p/pnet), versions locked in
// package-lock.json: a real implementation no one on this project wrote talks to ours.
//   - js dials our daemon and ours dials js (the daemon's --bootstrap, `democritus ping`);
//   - ping both ways; identify shows the right protocols and agent on both sides;
//   - DHT PUT/GET and PROVIDE/FIND_PROVIDERS cross implementations both ways, on
//     /democritus/kad/1.0.0 and, with --ipfs-dht true, on /ipfs/kad/1.0.0 (our side through the
//     daemon as a DHT server, through `democritus dht ...`, and a daemon's own --provide);
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
const { peerIdFromString } = await import('@libp2p/peer-id');
const { CID } = await import('multiformats/cid');
const { sha256 } = await import('multiformats/hashes/sha2');

const enc = new TextEncoder();
const dec = new TextDecoder();
const root = tempDir('dc-interop-');
after(() => { killAll(); removeDir(root); });

// A js-libp2p node on loopback. Our records live under /democritus/: js needs a validator and
// a selector for that namespace (ours accepts opaque values for now; see src/p2p/dht.c).
async function jsNode({ psk, protocol = '/democritus/kad/1.0.0', push = false } = {}) {
  return createLibp2p({
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
        validators: { democritus: async () => {} },
        selectors: { democritus: () => 0 },
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

async function jsPut(node, key, value) {
  let ok = false;
  for await (const ev of node.services.dht.put(enc.encode(key), enc.encode(value))) {
    if (ev.name === 'PEER_RESPONSE') ok = true;
  }
  return ok;
}

async function jsGet(node, key) {
  for await (const ev of node.services.dht.get(enc.encode(key))) {
    if (ev.name === 'VALUE') return dec.decode(ev.value);
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
  const js = await jsNode();
  try {
    await js.dial(multiaddr(a.addr));
    await waitForAsync(async () => (await js.services.dht.routingTable.size) > 0 || null, 10000,
      'js has our daemon in its routing table');
    const jsAddr = js.getMultiaddrs()[0].toString();

    // js -> ours: js stores on our daemon (a DHT server); our CLI reads it through the daemon.
    const key = `/democritus/interop/js-${Math.random()}`;
    assert.ok(await jsPut(js, key, 'from-js'), 'js PUT got an answer');
    let r = await dc(['dht', 'get', key, '--bootstrap', a.addr]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'from-js\n');
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

    // ours -> js: our CLI stores and provides with js as its only entry point; js finds both.
    const key2 = `/democritus/interop/ours-${Math.random()}`;
    r = await dc(['dht', 'put', key2, 'from-ours', '--bootstrap', jsAddr]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /stored on [1-9]\d* peer\(s\)/);
    assert.equal(await jsGet(js, key2), 'from-ours');
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
  const js = await jsNode({ protocol: '/ipfs/kad/1.0.0' });
  try {
    assert.match(a.stderr(), /DHT: \/ipfs\/kad\/1\.0\.0 in server mode/);
    await js.dial(multiaddr(a.addr));
    await waitForAsync(async () => (await js.services.dht.routingTable.size) > 0 || null, 10000,
      'js has our daemon in its /ipfs/kad routing table');
    const key = `/democritus/ipfs-kad/${Math.random()}`;
    assert.ok(await jsPut(js, key, 'v1'));
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
