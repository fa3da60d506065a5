// Privacy Pass with @cloudflare/privacypass-ts (pinned in package.json), against popgate.
//
//   node privatepass.mjs serve <port> <issuer-name>
//     a publicly verifiable (type 0x0002, RSA-2048, PSS) issuer over HTTP on 127.0.0.1:<port>:
//     GET /.well-known/private-token-issuer-directory (RFC 9578 §4), POST /token-request;
//     prints {"ready": true, "token_key": "<base64url SPKI>"} once listening.
//
//   echo '{"url": ..., "redeem": [url, ...], "origin_info": null|["other.example"], "issuer": null|url}' \
//     | node privatepass.mjs client
//     fetches url (expects popgate's 402), takes the PrivateToken challenge from WWW-Authenticate
//     (or rebuilds it for other origin_info: a token meant for another origin), asks the issuer
//     named by the 402's issuer_directory for a token, then sends `Authorization: PrivateToken token=…`
//     to every url in "redeem" in turn; prints each answer's status, headers and body.
import { createServer } from "node:http";
import {
  AuthorizationHeader,
  PRIVATE_TOKEN_ISSUER_DIRECTORY,
  TokenChallenge,
  WWWAuthenticateHeader,
  publicVerif,
  sendTokenRequest,
} from "@cloudflare/privacypass-ts";

const { BlindRSAMode, Client, Issuer, TokenRequest, getPublicKeyBytes, BLIND_RSA } = publicVerif;

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString());
}

async function serve(port, name) {
  const keys = await Issuer.generateKey(BlindRSAMode.PSS, {
    modulusLength: 2048,
    publicExponent: Uint8Array.from([1, 0, 1]),
  });
  const issuer = new Issuer(BlindRSAMode.PSS, name, keys.privateKey, keys.publicKey);
  const tokenKey = Buffer.from(await getPublicKeyBytes(keys.publicKey)).toString("base64url");
  const server = createServer(async (req, res) => {
    try {
      if (req.method === "GET" && req.url === PRIVATE_TOKEN_ISSUER_DIRECTORY) {
        res.writeHead(200, { "content-type": "application/private-token-issuer-directory", "cache-control": "max-age=60" });
        res.end(JSON.stringify({
          "issuer-request-uri": `http://127.0.0.1:${port}/token-request`,
          "token-keys": [{ "token-type": 2, "token-key": tokenKey }],
        }));
        return;
      }
      if (req.method === "POST" && req.url === "/token-request") {
        const chunks = [];
        for await (const c of req) chunks.push(c);
        const tokReq = TokenRequest.deserialize(BLIND_RSA, new Uint8Array(Buffer.concat(chunks)));
        const tokRes = await issuer.issue(tokReq);
        res.writeHead(200, { "content-type": "application/private-token-response" });
        res.end(Buffer.from(tokRes.serialize()));
        return;
      }
      res.writeHead(404);
      res.end();
    } catch (err) {
      res.writeHead(400);
      res.end(String(err));
    }
  });
  server.listen(port, "127.0.0.1", () => {
    process.stdout.write(JSON.stringify({ ready: true, token_key: tokenKey }) + "\n");
  });
}

function headersOf(resp) {
  const out = {};
  resp.headers.forEach((v, k) => { out[k] = v; });
  return out;
}

async function client() {
  const job = await readStdin();
  const first = await fetch(job.url, { headers: { accept: "application/json" } });
  const problem = await first.json();
  const header = first.headers.get("www-authenticate") || "";
  const offers = WWWAuthenticateHeader.parse(header).filter((h) => h.challenge.tokenType === 2);
  if (offers.length === 0) throw new Error(`no PrivateToken challenge in ${header}`);
  let offer = offers[0];
  if (job.origin_info) {
    const c = offer.challenge;
    offer = new WWWAuthenticateHeader(
      new TokenChallenge(c.tokenType, c.issuerName, c.redemptionContext, job.origin_info), offer.tokenKey);
  }
  const way = problem.ways_out.find((w) => w.kind === "privatepass");
  const issuerBase = job.issuer || way.challenges[0].issuer_directory;
  const directory = await (await fetch(issuerBase + PRIVATE_TOKEN_ISSUER_DIRECTORY)).json();
  const c = new Client(BlindRSAMode.PSS);
  const tokReq = await c.createTokenRequest(offer.challenge, offer.tokenKey);
  const resBytes = await sendTokenRequest(tokReq.serialize(), directory["issuer-request-uri"]);
  const token = await c.finalize(c.deserializeTokenResponse(resBytes));
  const authorization = new AuthorizationHeader(token).toString();
  const answers = [];
  for (const url of job.redeem) {
    const r = await fetch(url, { headers: { authorization, accept: "application/json" } });
    answers.push({ status: r.status, headers: headersOf(r), body: await r.text() });
  }
  process.stdout.write(JSON.stringify({
    first_status: first.status, way, authorization, answers,
  }) + "\n");
}

const [mode, ...args] = process.argv.slice(2);
if (mode === "serve") await serve(Number(args[0]), args[1]);
else if (mode === "client") await client();
else throw new Error("usage: privatepass.mjs serve <port> <name> | client");
