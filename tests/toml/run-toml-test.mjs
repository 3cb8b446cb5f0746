// SPDX-License-Identifier: MIT
//
// run-toml-test.mjs - runs the toml-test conformance suite against the toml-decode harness.
//
//   node run-toml-test.mjs <toml-decode path> <toml-test dir>
//
// Every file listed in <dir>/tests/files-toml-1.0.0 is run: valid/X.toml must decode (exit 0)
// to JSON structurally equal to valid/X.json (floats compared numerically with nan == nan,
// integers exactly as BigInt, date/times by value); invalid/X.toml must be rejected with exit
// status 1 and a "toml-decode: line L, column C: ..." message (so crashes and sanitizer reports
// count as failures). Prints "toml-test: N passed, M failed" and each failure; exits 1 on any
// failure, 77 (ctest skip) when the suite directory is absent. No npm packages.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

const [decoder, suiteDir] = process.argv.slice(2);
if (!decoder || !suiteDir) {
  console.error('usage: node run-toml-test.mjs <toml-decode> <toml-test dir>');
  process.exit(2);
}
const listFile = join(suiteDir, 'tests', 'files-toml-1.0.0');
if (!existsSync(listFile)) {
  console.log(`toml-test: suite not found at ${suiteDir}, skipping`);
  process.exit(77);
}

const TIMEOUT_MS = 20000;

function run(input) {
  return new Promise((resolve) => {
    const child = spawn(decoder, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = [];
    const err = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: -1, signal: null, stdout: '', stderr: String(e) });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    child.stdin.on('error', () => {}); // the decoder may exit before reading everything
    child.stdin.end(input);
  });
}

// ---- value comparison ------------------------------------------------------------------

function parseFloatValue(s) {
  const t = s.replace(/_/g, '');
  if (/^[+-]?nan$/.test(t)) return NaN;
  if (/^[+]?inf$/.test(t)) return Infinity;
  if (t === '-inf') return -Infinity;
  return Number(t);
}

// Normalises a date/time string to a comparable key: offset date-times become UTC instants
// (milliseconds since epoch plus the sub-millisecond digits), local forms a canonical string.
function datetimeKey(type, s) {
  const m = /^(?:(\d{4})-(\d{2})-(\d{2}))?[Tt ]?(?:(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?)?(?:([Zz])|([+-])(\d{2}):(\d{2}))?$/.exec(s);
  if (!m) return `unparsable:${s}`;
  const [, y, mo, d, h, mi, sec, frac = '', z, sign, oh, om] = m;
  const ns = (frac + '000000000').slice(0, 9);
  if (type === 'datetime') {
    if (y === undefined || h === undefined || (z === undefined && sign === undefined))
      return `malformed:${s}`;
    let ms = Date.UTC(+y, +mo - 1, +d, +h, +mi, +sec);
    if (sign !== undefined) ms -= (sign === '-' ? -1 : 1) * (+oh * 60 + +om) * 60000;
    return `${ms}.${ns}`;
  }
  if (type === 'datetime-local') {
    if (y === undefined || h === undefined || z !== undefined || sign !== undefined)
      return `malformed:${s}`;
    return `${y}-${mo}-${d}T${h}:${mi}:${sec}.${ns}`;
  }
  if (type === 'date-local') {
    if (y === undefined || h !== undefined || z !== undefined || sign !== undefined)
      return `malformed:${s}`;
    return `${y}-${mo}-${d}`;
  }
  if (type === 'time-local') {
    if (y !== undefined || h === undefined || z !== undefined || sign !== undefined)
      return `malformed:${s}`;
    return `${h}:${mi}:${sec}.${ns}`;
  }
  return `unknown:${s}`;
}

function isTagged(v) {
  return (
    v !== null &&
    typeof v === 'object' &&
    !Array.isArray(v) &&
    Object.keys(v).length === 2 &&
    typeof v.type === 'string' &&
    typeof v.value === 'string'
  );
}

// Returns null when equal, else a description of the first difference.
function diff(want, got, path) {
  if (Array.isArray(want)) {
    if (!Array.isArray(got)) return `${path}: expected array`;
    if (want.length !== got.length)
      return `${path}: expected ${want.length} elements, got ${got.length}`;
    for (let i = 0; i < want.length; i++) {
      const d = diff(want[i], got[i], `${path}[${i}]`);
      if (d) return d;
    }
    return null;
  }
  if (isTagged(want)) {
    if (!isTagged(got)) return `${path}: expected ${want.type} value`;
    if (want.type !== got.type) return `${path}: expected type ${want.type}, got ${got.type}`;
    const a = want.value;
    const b = got.value;
    let same;
    switch (want.type) {
      case 'float': {
        const x = parseFloatValue(a);
        const y = parseFloatValue(b);
        same = (Number.isNaN(x) && Number.isNaN(y)) || x === y;
        break;
      }
      case 'integer':
        try {
          same = BigInt(a) === BigInt(b);
        } catch {
          same = false;
        }
        break;
      case 'datetime':
      case 'datetime-local':
      case 'date-local':
      case 'time-local':
        same = datetimeKey(want.type, a) === datetimeKey(want.type, b);
        break;
      default:
        same = a === b;
    }
    return same ? null : `${path}: expected ${JSON.stringify(a)}, got ${JSON.stringify(b)}`;
  }
  if (want !== null && typeof want === 'object') {
    if (got === null || typeof got !== 'object' || Array.isArray(got) || isTagged(got))
      return `${path}: expected table`;
    const wk = Object.keys(want).sort();
    const gk = Object.keys(got).sort();
    for (const k of wk) if (!(k in got)) return `${path}: missing key ${JSON.stringify(k)}`;
    for (const k of gk) if (!(k in want)) return `${path}: unexpected key ${JSON.stringify(k)}`;
    for (const k of wk) {
      const d = diff(want[k], got[k], `${path}.${JSON.stringify(k)}`);
      if (d) return d;
    }
    return null;
  }
  return `${path}: unexpected JSON in expected file`;
}

// ---- one test --------------------------------------------------------------------------

async function runOne(name) {
  const file = join(suiteDir, 'tests', name);
  const input = readFileSync(file);
  const r = await run(input);
  const status = r.signal ? `signal ${r.signal}` : `exit ${r.code}`;
  if (name.startsWith('valid/')) {
    if (r.code !== 0) return `${status}: ${r.stderr.trim().split('\n')[0]}`;
    let want;
    let got;
    try {
      want = JSON.parse(readFileSync(file.replace(/\.toml$/, '.json'), 'utf8'));
    } catch (e) {
      return `cannot read expected JSON: ${e.message}`;
    }
    try {
      got = JSON.parse(r.stdout);
    } catch (e) {
      return `decoder printed invalid JSON: ${e.message}`;
    }
    return diff(want, got, '$');
  }
  if (r.code === 0) return 'accepted invalid TOML';
  if (r.code !== 1) return `${status} (crash?): ${r.stderr.trim().split('\n').slice(0, 3).join(' | ')}`;
  if (!/^toml-decode: line \d+, column \d+: ./.test(r.stderr)) return `bad error message: ${r.stderr.trim().split('\n')[0]}`;
  return null;
}

const names = readFileSync(listFile, 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l.endsWith('.toml'));

const failures = [];
let next = 0;
let passed = 0;
async function worker() {
  while (next < names.length) {
    const name = names[next++];
    let why;
    try {
      why = await runOne(name);
    } catch (e) {
      why = `runner error: ${e.message}`;
    }
    if (why) failures.push({ name, why });
    else passed++;
  }
}
const pool = Math.max(2, Math.min(8, availableParallelism() * 2));
await Promise.all(Array.from({ length: pool }, worker));

console.log(`toml-test: ${passed} passed, ${failures.length} failed`);
failures.sort((a, b) => a.name.localeCompare(b.name));
for (const f of failures) console.log(`FAIL ${f.name}: ${f.why}`);
process.exit(failures.length > 0 ? 1 : 0);
