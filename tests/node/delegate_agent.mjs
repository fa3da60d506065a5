// A JavaScript agent acting for a person through popgate (the README's JS example; WebCrypto only).
//
//   echo '{"gateway": "http://127.0.0.1:8080", "human_session": "v1....", "scope": "/api/",
//          "ttl": 600, "requests": [["GET", "/api/x"], ["POST", "/api/orders", "{\"n\":1}"]]}' \
//     | node delegate_agent.mjs
//
// 1. makes a P-256 key (WebCrypto), 2. the human's session asks popgate for a delegation to it,
// 3. sends each request with `Authorization: PoP <delegation>` and an RFC 9421 signature
// (keyid = the delegation id; ecdsa-p256-sha256: raw r||s, as WebCrypto signs).
// Prints {"delegation": <popgate's answer>, "answers": [{status, headers, body}, ...]}.
const b64 = (buf) => Buffer.from(buf).toString("base64");

async function delegate(gateway, humanSession, publicJwk, scope, ttl) {
  const r = await fetch(`${gateway}/.well-known/popgate/delegate`, {
    method: "POST",
    headers: { authorization: `PoP ${humanSession}`, "content-type": "application/json" },
    body: JSON.stringify({ jwk: { kty: publicJwk.kty, crv: publicJwk.crv, x: publicJwk.x, y: publicJwk.y }, scope, ttl }),
  });
  if (r.status !== 201) throw new Error(`delegation refused: ${r.status} ${await r.text()}`);
  return r.json();
}

async function signedFetch(privateKey, delegation, method, url, body) {
  const headers = { authorization: `PoP ${delegation.token}` };
  const covered = ['"@method"', '"@target-uri"'];
  const lines = [`"@method": ${method}`, `"@target-uri": ${url}`];
  if (body !== undefined) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(body));
    headers["content-digest"] = `sha-256=:${b64(digest)}:`;
    covered.push('"content-digest"');
    lines.push(`"content-digest": ${headers["content-digest"]}`);
  }
  const created = Math.floor(Date.now() / 1000);
  const params = `(${covered.join(" ")});created=${created};expires=${created + 60};keyid="${delegation.id}";alg="ecdsa-p256-sha256"`;
  lines.push(`"@signature-params": ${params}`);
  const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, privateKey, new TextEncoder().encode(lines.join("\n")));
  headers["signature-input"] = `sig1=${params}`;
  headers["signature"] = `sig1=:${b64(sig)}:`;
  return fetch(url, { method, headers, body });
}

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const job = JSON.parse(Buffer.concat(chunks).toString());
const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
const jwk = await crypto.subtle.exportKey("jwk", keys.publicKey);
const delegation = await delegate(job.gateway, job.human_session, jwk, job.scope, job.ttl);
const answers = [];
for (const [method, path, body] of job.requests) {
  const r = await signedFetch(keys.privateKey, delegation, method, job.gateway + path, body);
  const headers = {};
  r.headers.forEach((v, k) => { headers[k] = v; });
  answers.push({ status: r.status, headers, body: await r.text() });
}
process.stdout.write(JSON.stringify({ delegation, answers }) + "\n");
