// Does @worldcoin/idkit-core 4.3.0 accept popgate's signed rp_context?
// stdin: {app_id, action, rp_context, signer}. The SDK's own code: idkit-server's
// computeRpSignatureMessage builds the signed payload (recovered with viem's EIP-191
// recoverMessageAddress), and IDKit.request(...).preset(orbLegacy()) parses the
// rp_context in the WASM core and builds the bridge request (fetch is captured here:
// no network). Prints {recovered, accepted, connector, bridge_posts}.
import { readFileSync } from "node:fs";
import { IDKit, orbLegacy } from "@worldcoin/idkit-core";
import { computeRpSignatureMessage } from "@worldcoin/idkit-server";
import { recoverMessageAddress, hexToBytes } from "viem";

const input = JSON.parse(await new Promise((ok) => {
  let s = ""; process.stdin.on("data", (d) => (s += d)); process.stdin.on("end", () => ok(s));
}));
const ctx = input.rp_context;
const msg = computeRpSignatureMessage(hexToBytes(ctx.nonce), ctx.created_at, ctx.expires_at, input.action);
let recovered = null;
try {
  recovered = await recoverMessageAddress({ message: { raw: msg }, signature: ctx.signature });
} catch (e) {
  recovered = null;
}

const posts = [];
globalThis.fetch = async (url, init) => {
  const u = String(url?.url ?? url);
  if (u.startsWith("file:")) { // the SDK loads its WASM core with fetch(new URL(..., import.meta.url))
    return new Response(readFileSync(new URL(u)), { headers: { "content-type": "application/wasm" } });
  }
  posts.push({ url: u, body: init?.body ? JSON.parse(init.body) : null });
  const resp = new Response(JSON.stringify({ request_id: "00000000-0000-4000-8000-000000000000" }),
    { status: 200, headers: { "content-type": "application/json" } });
  Object.defineProperty(resp, "url", { value: u });
  return resp;
};
let accepted = false, connector = null, error = null;
try {
  const req = await IDKit.request({
    app_id: input.app_id, action: input.action, rp_context: ctx, allow_legacy_proofs: true,
    bridge_url: "https://bridge.popgate.test",
  }).preset(orbLegacy({ signal: "" }));
  connector = req.connectorURI ?? null;
  accepted = true;
} catch (e) {
  error = String(e?.message ?? e);
}
console.log(JSON.stringify({ recovered, accepted, connector, error, bridge_posts: posts }));
process.exit(0);
