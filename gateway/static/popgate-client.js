/* popgate client (ES module, browsers and node 18+): answer a popgate 402, then retry.
 *
 *   import { popFetch } from "/.well-known/popgate/static/popgate-client.js";   // browsers
 *   import { popFetch } from "./popgate-client.js";                              // node
 *   const r = await popFetch("https://gw.example/api/things", {}, { maxBits: 24 });
 *   r.status; r.solved  // {way, headers, hashes, seconds, extra} when a 402 was answered
 *
 * A challenge is 402 with Content-Type application/problem+json whose `ways_out` lists what
 * the gateway accepts (see gateway/client.py, the Python twin, for the wire format):
 *   puzzle   : nonces with SHA-256(challenge ‖ n) (subs = 1) or SHA-256(challenge "." j "." n_j)
 *              having `bits` leading zero bits; retry with `PoP-Puzzle: <challenge>:<n0>[,<n1>…]`.
 *              Browsers solve it in a Web Worker (the gateway's challenge-worker.js); node with
 *              node:crypto.
 *   hashcash : a v1 stamp (SHA-1) for `resource` with `bits`; retry with `X-Hashcash: <stamp>`.
 *   prove    : with `options.worldid` (an IDKit result, or an async function given the way out that
 *              returns one) the result is posted to the way out's `endpoint`; the answer's session
 *              token is sent as `Authorization: PoP <token>` on the retry.
 * One retry, never a loop. Failures throw CannotSolve (nothing this client can do) or
 * PopgateError (the gateway refused what was sent: `status`, `reason`).
 */

export const SOLVABLE = ["puzzle", "hashcash"];
export const WORKER_URL = "/.well-known/popgate/static/challenge-worker.js";

export class CannotSolve extends Error {}

export class PopgateError extends Error {
  constructor(status, reason, detail) {
    super(`popgate refused (${status} ${reason})${detail ? ": " + detail : ""}`);
    this.status = status;
    this.reason = reason;
  }
}

const isNode = typeof process !== "undefined" && !!(process.versions && process.versions.node);
const enc = new TextEncoder();
let nodeCrypto = null;

async function nodeHash() {
  if (nodeCrypto === null) nodeCrypto = await import("node:crypto");
  return nodeCrypto;
}

function zeroBits(buf, bits) {
  let i = 0;
  for (; bits >= 8; bits -= 8, i++) if (buf[i] !== 0) return false;
  return bits === 0 || buf[i] >> (8 - bits) === 0;
}

async function digests(alg, texts) {
  if (isNode) {
    const c = await nodeHash();
    const name = alg === "SHA-1" ? "sha1" : "sha256";
    return texts.map((t) => c.createHash(name).update(t).digest());
  }
  const out = await Promise.all(texts.map((t) => crypto.subtle.digest(alg, enc.encode(t))));
  return out.map((d) => new Uint8Array(d));
}

/** Smallest n >= 0 with HASH(prefix + format(n)) having `bits` leading zero bits: {nonce, tries}. */
export async function findNonce(prefix, bits, alg = "SHA-256", format = (n) => String(n)) {
  const batch = 1024;
  for (let start = 0; ; start += batch) {
    const texts = [];
    for (let i = 0; i < batch; i++) texts.push(prefix + format(start + i));
    const ds = await digests(alg, texts);
    for (let i = 0; i < batch; i++) if (zeroBits(ds[i], bits)) return { nonce: start + i, tries: start + i + 1 };
  }
}

function inWorker(way, workerUrl) {
  return new Promise((resolve, reject) => {
    const w = new Worker(workerUrl);
    w.onmessage = (ev) => {
      const m = ev.data || {};
      if (m.type === "done") { w.terminate(); resolve(m); }
      else if (m.type === "error") { w.terminate(); reject(new CannotSolve(m.message)); }
    };
    w.onerror = (e) => { w.terminate(); reject(new CannotSolve(String(e.message || e))); };
    w.postMessage({ challenge: way.challenge, bits: way.bits, subs: way.subs });
  });
}

function now() {
  return typeof performance !== "undefined" ? performance.now() / 1000 : Date.now() / 1000;
}

/** Solve a `puzzle` way out; CannotSolve when harder than maxBits. */
export async function solvePuzzle(way, { maxBits = 28, workerUrl = WORKER_URL } = {}) {
  const challenge = String(way.challenge), bits = Number(way.bits), subs = Number(way.subs ?? 1);
  if (!(bits >= 0 && bits <= maxBits) || !(subs >= 1 && subs <= 16) || challenge.includes(":")) {
    throw new CannotSolve(`puzzle of ${bits} bits x ${subs} is beyond this client`);
  }
  const t0 = now();
  let nonces = [], hashes = 0;
  if (!isNode && typeof Worker !== "undefined") {
    const r = await inWorker({ challenge, bits, subs }, workerUrl);
    nonces = r.nonces.map(String);
    hashes = r.hashes;
  } else {
    for (let j = 0; j < subs; j++) {
      const r = await findNonce(subs === 1 ? challenge : `${challenge}.${j}.`, bits);
      nonces.push(String(r.nonce));
      hashes += r.tries;
    }
  }
  const header = String(way.header ?? "PoP-Puzzle");
  return solved("puzzle", { [header]: `${challenge}:${nonces.join(",")}` }, hashes, now() - t0, { nonces });
}

function solved(way, headers, hashes, seconds, extra) {
  return { way, headers, hashes, seconds, extra, hashRate: seconds > 0 ? hashes / seconds : 0 };
}

function randomB64(n) {
  const bytes = new Uint8Array(n);
  (isNode ? globalThis.crypto : crypto).getRandomValues(bytes);
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** Mint a hashcash v1 stamp (SHA-1, date YYMMDD in UTC) for `resource`. */
export async function mintHashcash(resource, bits, { at, maxBits = 28, header = "X-Hashcash" } = {}) {
  if (!(bits >= 0 && bits <= maxBits) || String(resource).includes(":")) {
    throw new CannotSolve(`stamp of ${bits} bits for ${resource} is beyond this client`);
  }
  const t0 = now();
  const d = new Date((at ?? Date.now() / 1000) * 1000);
  const date = [d.getUTCFullYear() % 100, d.getUTCMonth() + 1, d.getUTCDate()]
    .map((x) => String(x).padStart(2, "0")).join("");
  const prefix = `1:${bits}:${date}:${resource}::${randomB64(12)}:`;
  const r = await findNonce(prefix, bits, "SHA-1", (n) => n.toString(16));
  const stamp = prefix + r.nonce.toString(16);
  return solved("hashcash", { [header]: stamp }, r.tries, now() - t0, { stamp });
}

/** The `ways_out` of a problem body ([] when absent or malformed); `kind` on each. */
export function waysOut(problem) {
  const ways = problem && typeof problem === "object" ? problem.ways_out : null;
  if (!Array.isArray(ways)) return [];
  return ways
    .filter((w) => w && typeof w === "object" && ("kind" in w || "type" in w))
    .map((w) => ({ ...w, kind: w.kind ?? w.type }));
}

/** Solve the first way out in `prefer` order that is offered; CannotSolve otherwise. */
export async function respond(problem, { prefer = SOLVABLE, maxBits = 28, at, workerUrl } = {}) {
  if (typeof problem === "string") {
    try { problem = JSON.parse(problem); } catch { throw new CannotSolve("not JSON"); }
  }
  if (!problem || typeof problem !== "object" || Array.isArray(problem)) {
    throw new CannotSolve("not a problem+json object");
  }
  const offered = Object.fromEntries(waysOut(problem).map((w) => [w.kind, w]));
  let last = null;
  for (const kind of prefer) {
    const way = offered[kind];
    if (!way) continue;
    try {
      if (kind === "puzzle") return await solvePuzzle(way, { maxBits, workerUrl });
      if (kind === "hashcash") {
        return await mintHashcash(String(way.resource), Number(way.bits), { at, maxBits, header: way.header });
      }
    } catch (e) {
      last = e;
    }
  }
  throw new CannotSolve(`no solvable way out among ${Object.keys(offered).sort()}: ${last ? last.message : "none offered"}`);
}

function isChallenge(resp) {
  const ct = (resp.headers.get("Content-Type") || "").split(";")[0].trim();
  return resp.status === 402 && ct === "application/problem+json";
}

/** Post a World ID (IDKit) result to the `prove` way out's endpoint; returns the session answer. */
export async function proveWorldId(way, result, { base, signal = "", fetchImpl = globalThis.fetch } = {}) {
  const url = new URL(String(way.endpoint ?? "/.well-known/popgate/worldid"), base).toString();
  const resp = await fetchImpl(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ result, signal }),
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok || typeof body.token !== "string") {
    throw new PopgateError(resp.status, body.reason || "refused", body.detail);
  }
  return body;
}

/** fetch() that answers a popgate 402 (work, or a World ID result) and retries once.
 *  The final Response gets `solved` (work) or `session` (World ID) set. */
export async function popFetch(url, init = {}, options = {}) {
  const { maxBits = 28, prefer = SOLVABLE, worldid, workerUrl, fetchImpl = globalThis.fetch } = options;
  const resp = await fetchImpl(url, init);
  if (!isChallenge(resp)) return resp;
  const problem = await resp.json();
  const base = typeof url === "string" ? new URL(url, globalThis.location?.href).toString() : url.url;
  const prove = waysOut(problem).find((w) => w.kind === "prove");
  const headers = new Headers(init.headers || {});
  let extra;
  if (worldid && prove) {
    const result = typeof worldid === "function" ? await worldid(prove) : worldid;
    const session = await proveWorldId(prove, result, { base, signal: options.signal ?? "", fetchImpl });
    headers.set("Authorization", `PoP ${session.token}`);
    extra = { session };
  } else {
    const s = await respond(problem, { prefer, maxBits, workerUrl });
    for (const [k, v] of Object.entries(s.headers)) headers.set(k, v);
    extra = { solved: s };
  }
  const retry = await fetchImpl(url, { ...init, headers });
  return Object.assign(retry, extra);
}
