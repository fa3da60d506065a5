"""Fees: x402 payments and their settlement, prepaid credits and their ledger, pay-per-crawl,
and metering of what each subject spent. Protocol details: README "Fees", THREAT_MODEL "x402"."""
