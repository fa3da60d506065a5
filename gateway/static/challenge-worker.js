/* popgate puzzle solver (Web Worker).
 *
 * In:  {challenge: "pz1.<kid>.<payload>.<mac>", bits: b, subs: k}
 * Out: {type: "progress", hashes} ... then {type: "done", nonces: [...], hashes}
 *      or {type: "error", message}.
 *
 * k = 1: find decimal nonce n with SHA-256(challenge + n) starting with b zero bits.
 * k > 1: for j = 0..k-1 find n_j with SHA-256(challenge + "." + j + "." + n_j) likewise.
 * (verifiers/puzzle.py is the reference.) Uses crypto.subtle.digest in batches;
 * falls back to a small pure-JS SHA-256 where SubtleCrypto is unavailable
 * (pages served over plain http are not a secure context).
 */
"use strict";

var BATCH = 512;
var enc = new TextEncoder();

function zeroBits(buf, bits) {           // buf: Uint8Array digest
  var i = 0;
  for (; bits >= 8; bits -= 8, i++) if (buf[i] !== 0) return false;
  return bits === 0 || (buf[i] >> (8 - bits)) === 0;
}

/* ---- pure-JS SHA-256 fallback (FIPS 180-4) ---- */
var K = new Uint32Array([
  0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
  0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
  0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
  0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
  0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
  0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
  0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
  0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2]);
var W = new Uint32Array(64);

function sha256js(bytes) {
  var len = bytes.length, nblk = ((len + 9 + 63) >> 6), m = new Uint8Array(nblk * 64);
  m.set(bytes); m[len] = 0x80;
  var bitLen = len * 8, dv = new DataView(m.buffer);
  dv.setUint32(m.length - 4, bitLen >>> 0); dv.setUint32(m.length - 8, Math.floor(bitLen / 4294967296));
  var h0=0x6a09e667,h1=0xbb67ae85,h2=0x3c6ef372,h3=0xa54ff53a,h4=0x510e527f,h5=0x9b05688c,h6=0x1f83d9ab,h7=0x5be0cd19;
  for (var off = 0; off < m.length; off += 64) {
    for (var t = 0; t < 16; t++) W[t] = dv.getUint32(off + t * 4);
    for (t = 16; t < 64; t++) {
      var x = W[t-15], y = W[t-2];
      var s0 = ((x>>>7)|(x<<25)) ^ ((x>>>18)|(x<<14)) ^ (x>>>3);
      var s1 = ((y>>>17)|(y<<15)) ^ ((y>>>19)|(y<<13)) ^ (y>>>10);
      W[t] = (W[t-16] + s0 + W[t-7] + s1) | 0;
    }
    var a=h0,b=h1,c=h2,d=h3,e=h4,f=h5,g=h6,h=h7;
    for (t = 0; t < 64; t++) {
      var S1 = ((e>>>6)|(e<<26)) ^ ((e>>>11)|(e<<21)) ^ ((e>>>25)|(e<<7));
      var t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[t] + W[t]) | 0;
      var S0 = ((a>>>2)|(a<<30)) ^ ((a>>>13)|(a<<19)) ^ ((a>>>22)|(a<<10));
      var t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      h=g; g=f; f=e; e=(d+t1)|0; d=c; c=b; b=a; a=(t1+t2)|0;
    }
    h0=(h0+a)|0; h1=(h1+b)|0; h2=(h2+c)|0; h3=(h3+d)|0; h4=(h4+e)|0; h5=(h5+f)|0; h6=(h6+g)|0; h7=(h7+h)|0;
  }
  var out = new Uint8Array(32), ov = new DataView(out.buffer);
  [h0,h1,h2,h3,h4,h5,h6,h7].forEach(function (v, i) { ov.setUint32(i * 4, v >>> 0); });
  return out;
}

var subtle = (self.crypto && self.crypto.subtle) ? self.crypto.subtle : null;

async function findNonce(prefix, bits, counter) {
  if (subtle) {
    for (var start = 0; ; start += BATCH) {
      var jobs = [];
      for (var i = 0; i < BATCH; i++) jobs.push(subtle.digest("SHA-256", enc.encode(prefix + (start + i))));
      var digests = await Promise.all(jobs);
      for (i = 0; i < BATCH; i++) {
        if (zeroBits(new Uint8Array(digests[i]), bits)) { counter.add(i + 1); return String(start + i); }
      }
      counter.add(BATCH);
    }
  }
  for (var n = 0; ; n++) {
    if (zeroBits(sha256js(enc.encode(prefix + n)), bits)) { counter.add((n & 4095) + 1); return String(n); }
    if ((n & 4095) === 4095) { counter.add(4096); await null; }
  }
}

async function solve(challenge, bits, subs) {
  var total = 0, lastReport = 0;
  var counter = { add: function (n) {
    total += n;
    var now = Date.now();
    if (now - lastReport > 250) { lastReport = now; self.postMessage({ type: "progress", hashes: total }); }
  } };
  var nonces = [];
  for (var j = 0; j < subs; j++) {
    var prefix = subs === 1 ? challenge : challenge + "." + j + ".";
    nonces.push(await findNonce(prefix, bits, counter));
  }
  return { nonces: nonces, hashes: total };
}

self.onmessage = function (ev) {
  var m = ev.data || {};
  if (typeof m.challenge !== "string" || !(m.bits >= 0 && m.bits <= 40) || !(m.subs >= 1 && m.subs <= 16)) {
    self.postMessage({ type: "error", message: "bad challenge parameters" });
    return;
  }
  solve(m.challenge, m.bits, m.subs).then(function (r) {
    self.postMessage({ type: "done", nonces: r.nonces, hashes: r.hashes });
  }, function (e) { self.postMessage({ type: "error", message: String(e) }); });
};

if (typeof module !== "undefined") module.exports = { sha256js: sha256js, zeroBits: zeroBits, solve: solve };
