"""popgate's gateway: the HTTP side of telling people from bots and metering agents.

A map of the sub-packages (the README's "How a request flows" tells the story):

- :mod:`~popgate.gateway.app`: ``build_app`` wires one :class:`Gateway` from a validated config.
- ``http/``: the listener, proxying to the origin (two upstream clients), WebSocket, header rules.
- ``pipeline/``: the per-request context, the stages, decisions and how they become HTTP responses.
- ``schemes/``: one module per kind of evidence (session, puzzle, hashcash, World ID, zkLogin, Web Bot Auth).
- ``payments/``: x402, prepaid credits, pay-per-crawl, settlement, metering.
- ``ops/``: config, metrics, the admin listener and status page, worker processes.
- ``stores/``: the Store protocol and its memory, SQLite and Redis backends; failure modes.
- ``cli/``: the ``popgate`` command.

The protocol checks themselves live in :mod:`popgate.verifiers`, the operator's policy in
:mod:`popgate.policies`.
"""
