// An IDKit 4.x result built by @worldcoin/idkit-core 4.3.0 itself: IDKit.request(...)
// .preset(...) opens a bridge request, and its WASM core polls the bridge, decrypts the
// answer and turns it into the IDKitResult a dApp posts to its backend.
// stdin: {app_id, action, rp_context, preset: "proofOfHuman" | "orbLegacy", answer}
// where `answer` is what World App would put on the bridge (the plaintext JSON, see
// worldcoin/idkit rust/core/src/bridge.rs BridgeResponse). The bridge is this script's
// fetch: POST /request -> {request_id}; GET /response/{id} -> {status: "completed",
// response: {iv, payload}}, AES-256-GCM under the key the SDK put in its connect URL (k=).
// Prints {result, connector, error}.
import { readFileSync } from "node:fs";
import { createCipheriv, randomBytes } from "node:crypto";
import { IDKit, orbLegacy, proofOfHuman } from "@worldcoin/idkit-core";

const input = JSON.parse(await new Promise((ok) => {
  let s = ""; process.stdin.on("data", (d) => (s += d)); process.stdin.on("end", () => ok(s));
}));
const REQUEST_ID = "00000000-0000-4000-8000-000000000001";
let key = null;

function encrypt(plaintext) {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return { iv: iv.toString("base64"), payload: body.toString("base64") };
}

function reply(u, body) {
  const resp = new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
  Object.defineProperty(resp, "url", { value: u });
  return resp;
}

globalThis.fetch = async (url, init) => {
  const u = String(url?.url ?? url);
  if (u.startsWith("file:")) { // the SDK loads its WASM core with fetch(new URL(..., import.meta.url))
    return new Response(readFileSync(new URL(u)), { headers: { "content-type": "application/wasm" } });
  }
  if (u.endsWith("/request")) return reply(u, { request_id: REQUEST_ID });
  if (u.endsWith(`/response/${REQUEST_ID}`)) {
    return reply(u, { status: "completed", response: encrypt(JSON.stringify(input.answer)) });
  }
  return new Response("not found", { status: 404 });
};

let result = null, connector = null, error = null;
try {
  const preset = input.preset === "orbLegacy" ? orbLegacy({ signal: input.signal }) : proofOfHuman({ signal: input.signal });
  const req = await IDKit.request({
    app_id: input.app_id, action: input.action, rp_context: input.rp_context, allow_legacy_proofs: true,
    bridge_url: "https://bridge.popgate.test",
  }).preset(preset);
  connector = req.connectorURI;
  key = Buffer.from(new URL(connector).searchParams.get("k"), "base64");
  const status = await req.pollOnce();
  result = status.result ?? null;
  if (!result) error = JSON.stringify(status);
} catch (e) {
  error = String(e?.message ?? e);
}
console.log(JSON.stringify({ result, connector, error }));
process.exit(0);
