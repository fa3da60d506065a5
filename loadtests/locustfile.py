"""popgate agent-flood scenarios: ``locust -f loadtests/locustfile.py``.

User classes (weights in parentheses): FloodBot (10), PuzzleBot (3), Human (3),
PayingAgent (2), VerifiedAgent (2), AccountUser (2), WorldIdHuman (1, one
user), Replayer (1), Sybil (1), PrivacyPassHuman (1), DelegatedFleet (1 user, 20
agent keys). A class whose credentials are not in the
environment or on the command line is left out (see loadtests/settings.py and
loadtests/README.md; every ``POPGATE_LT_X_Y`` variable is also a ``--pg-x-y``
flag); ``--pg-classes A,B`` runs only those; ``--pg-one-each 1`` gives
every class exactly one user (smoke runs). The shape comes from
``--pg-shape`` (staged | ramp | spike | flood | none). The gate
(loadtests/gate.py) sets a non-zero exit code on any breach or threshold.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locust import events

from loadtests.settings import Settings, add_options, apply_command_line

apply_command_line(sys.argv[1:])  # --pg-* flags → POPGATE_LT_* before anything reads them

from loadtests import attackers, delegated, gate, shapes, users, vouchers  # noqa: E402


@events.init_command_line_parser.add_listener
def _popgate_options(parser: object) -> None:
    """So that locust accepts (and ``--help`` lists) the ``--pg-*`` flags."""
    add_options(parser, include_in_web_ui=False)


_settings = Settings.from_env()
_CANDIDATES = [
    users.FloodBot,
    users.PuzzleBot,
    users.Human,
    users.PayingAgent,
    users.VerifiedAgent,
    users.AccountUser,
    users.WorldIdHuman,
    attackers.Replayer,
    attackers.Sybil,
    delegated.PrivacyPassHuman,
    delegated.DelegatedFleet,
    vouchers.VoucherAgent,
]
_only = {c.strip() for c in os.environ.get("POPGATE_LT_CLASSES", "").split(",") if c.strip()}
ACTIVE: list[str] = []
for _cls in _CANDIDATES:
    _why = _settings.missing(_cls.__name__)
    if _only and _cls.__name__ not in _only:
        continue
    if _why:
        logging.getLogger("popgate.locustfile").warning("%s left out: %s", _cls.__name__, _why)
        continue
    if os.environ.get("POPGATE_LT_ONE_EACH") == "1":
        _cls.fixed_count = 1  # smoke runs: exactly one user of every class
    globals()[_cls.__name__] = _cls
    ACTIVE.append(_cls.__name__)
del _cls

_shape = os.environ.get("POPGATE_LT_SHAPE", "none")
if _shape != "none":
    Shape = shapes.SHAPES[_shape]

gate.install(_settings, ACTIVE)
