// The official TypeScript x402 client (@x402/fetch + @x402/evm upto) paying popgate:
// N requests, each authorizing the route's maximum and charged the usage the origin reports.
// Usage: node x402_upto_client.mjs URL PRIVATE_KEY COUNT  → JSON on stdout.
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { UptoEvmScheme } from "@x402/evm/upto/client";
import { toClientEvmSigner } from "@x402/evm";
import { privateKeyToAccount } from "viem/accounts";

const [url, key, count] = process.argv.slice(2);
const account = privateKeyToAccount(key);
const client = new x402Client().register("eip155:84532", new UptoEvmScheme(toClientEvmSigner(account)));
const pay = wrapFetchWithPayment(fetch, client);

const results = [];
for (let i = 0; i < Number(count); i++) {
  const res = await pay(`${url}?usage=${i + 1}`);
  const header = res.headers.get("PAYMENT-RESPONSE");
  const settle = header ? decodePaymentResponseHeader(header) : null;
  const body = await res.json().catch(() => null);
  results.push({
    status: res.status,
    charged: res.headers.get("PoP-Charged"),
    amount: settle?.amount ?? null,
    success: settle?.success ?? null,
    served: body?.served ?? null,
  });
}
process.stdout.write(JSON.stringify({ payer: account.address, results }));
