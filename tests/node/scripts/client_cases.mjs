// Runs gateway/static/popgate-client.js in node on the cases given on stdin; prints the outcomes.
// case: {op: "respond", problem, prefer?, maxBits?} | {op: "popFetch", url, headers?, maxBits?, worldid?, signal?}
//     | {op: "fetch", url, headers?}
import * as client from "../../../gateway/static/popgate-client.js";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const { cases } = JSON.parse(Buffer.concat(chunks).toString());

async function run(c) {
  try {
    if (c.op === "respond") {
      return { solved: await client.respond(c.problem, { prefer: c.prefer, maxBits: c.maxBits }) };
    }
    if (c.op === "waysOut") return { ways: client.waysOut(c.problem) };
    const init = { headers: c.headers || {} };
    const r = c.op === "popFetch"
      ? await client.popFetch(c.url, init, { maxBits: c.maxBits, worldid: c.worldid, signal: c.signal })
      : await fetch(c.url, init);
    const text = await r.text();
    let body;
    try { body = JSON.parse(text); } catch { body = text; }
    return { status: r.status, body, solved: r.solved ?? null, session: r.session ?? null };
  } catch (e) {
    return { error: e.constructor.name, message: e.message, status: e.status ?? null, reason: e.reason ?? null };
  }
}

const out = [];
for (const c of cases) out.push(await run(c));
process.stdout.write(JSON.stringify(out));
