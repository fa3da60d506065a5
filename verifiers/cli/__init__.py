"""Adapters for ``popgate verify SCHEME``: one module per scheme.

Each module ``verifiers.cli.<scheme>`` (dashes become underscores) defines::

    async def check(case: dict, env: gateway.cli.verify.VerifyEnv) -> dict

It returns the extra output fields for a valid case (``valid``/``reason`` are
added by the driver) or raises ``verifiers.errors.VerificationError``.
"""
