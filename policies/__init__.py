"""Policy: which class a client is, and what each class gets on each route.

- ``policies.loader``: load/validate/compile a TOML policy (``PolicyError``);
- ``policies.engine``: ``Policy.match(view, klass, weight) -> Match``;
- ``policies.request``: per-request values the rules check (``Req``, ``Check``);
- ``policies.holder``: ``PolicyHolder`` (current policy, reload);
- ``policies.model``: ``RequestView``, ``Action``, ``Match``, ``Rate``;
- ``policies.classify``: class and heuristic weight from attestations;
- ``policies.ratelimit``: the GCRA step and rate-limit keys;
- ``policies.difficulty``: adaptive puzzle difficulty.

Format and snippet library: ``policies/README.md``.
"""
