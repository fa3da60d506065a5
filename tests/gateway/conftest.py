"""Fixtures shared by the gateway tests: the local key-directory and JWKS servers that the
verifier tests define (re-exported here so any gateway test can ask for them by name)."""

from tests.gateway.schemes.test_zklogin import jwks_server  # noqa: F401 (a fixture)
from tests.verifiers.test_webbotauth import dir_server  # noqa: F401 (a fixture)
