// A real OpenID provider for the tests: oidc-provider (pinned in tests/node) on 127.0.0.1:<port>,
// with its development login form (any login/password) and consent screen.
// argv: port, then a JSON list of clients ({client_id, client_secret, redirect_uris}).
// Prints one JSON line {"issuer"} once listening; runs until killed.
import Provider from "oidc-provider";

const port = Number(process.argv[2]);
const clients = JSON.parse(process.argv[3]).map((c) => ({
  grant_types: ["authorization_code"],
  response_types: ["code"],
  token_endpoint_auth_method: "client_secret_basic",
  ...c,
}));
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients,
  pkce: { required: () => true },
  cookies: { keys: ["popgate-test-cookie-key-0123456789abcdef"] },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  ttl: { AuthorizationCode: 60, IdToken: 300, Interaction: 600, Session: 600, Grant: 600 },
});
provider.listen(port, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ issuer }) + "\n");
});
