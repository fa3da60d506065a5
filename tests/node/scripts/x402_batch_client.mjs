// The official TypeScript x402 client (@x402/fetch + @x402/evm batch-settlement)
// paying popgate: N requests (deposit, vouchers, top-ups), then a cooperative refund.
// Usage: node x402_batch_client.mjs URL PRIVATE_KEY COUNT  → JSON on stdout.
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { BatchSettlementEvmScheme } from "@x402/evm/batch-settlement/client";
import { toClientEvmSigner } from "@x402/evm";
import { privateKeyToAccount } from "viem/accounts";

const [url, key, count] = process.argv.slice(2);
const account = privateKeyToAccount(key);
const scheme = new BatchSettlementEvmScheme(toClientEvmSigner(account));
const client = new x402Client().register("eip155:84532", scheme);
const pay = wrapFetchWithPayment(fetch, client);

const results = [];
for (let i = 0; i < Number(count); i++) {
  const res = await pay(url);
  const header = res.headers.get("PAYMENT-RESPONSE");
  const settle = header ? decodePaymentResponseHeader(header) : null;
  const body = await res.json().catch(() => null);
  results.push({
    status: res.status,
    charged: body?.pop?.["PoP-Charged"] ?? null,
    cumulative: settle?.extra?.channelState?.chargedCumulativeAmount ?? null,
    transaction: settle?.transaction ?? null,
  });
}
let refund = null;
try {
  const r = await scheme.refund(url);
  refund = { success: r.success, transaction: r.transaction };
} catch (e) {
  refund = { error: String(e) };
}
process.stdout.write(JSON.stringify({ payer: account.address, results, refund }));
