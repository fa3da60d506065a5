// verifyCloudProof from @worldcoin/idkit-core 2.1.0 (its backend entry), against popgate's verify API.
// stdin: {"calls": [{"proof": {...ISuccessResult}, "app_id", "action", "signal", "endpoint"}], "parallel": false}
// stdout: the list of results verifyCloudProof returned, in order.
import { verifyCloudProof } from "idkit-core-v2/backend";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const { calls, parallel } = JSON.parse(Buffer.concat(chunks).toString());
const one = (c) => verifyCloudProof(c.proof, c.app_id, c.action, c.signal, c.endpoint);
let out;
if (parallel) {
  out = await Promise.all(calls.map(one));
} else {
  out = [];
  for (const c of calls) out.push(await one(c));
}
process.stdout.write(JSON.stringify(out));
