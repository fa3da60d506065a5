"""The quitting gate: the run fails (exit code 1) on any security breach, on a
fee charged other than exactly once, or when latency or unexpected outcomes
pass their thresholds. Also writes the tallies to ``POPGATE_LT_SUMMARY``.

Distributed runs (``locust --processes N``, or ``--master`` with ``--worker``s on
other hosts): each worker sends its tally (cumulative) to the master when its users stop
(message ``popgate_tally``, before the worker reports itself stopped; the shape
stops the workers before it quits, loadtests/shapes.py); the master keeps each
worker's last one and adds them up and runs the gate on the sum, so attack counts and the exactly-once
fee checks cover every worker. Workers run no gate of their own."""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from locust import events
from locust.runners import MasterRunner, WorkerRunner

from loadtests.settings import Settings
from loadtests.tally import tally_of

log = logging.getLogger("popgate.gate")


def _balance(s: Settings, account: str) -> int | None:
    if not (s.admin_url and s.admin_token):
        return None
    req = urllib.request.Request(
        f"{s.admin_url}/admin/credits/accounts/{account}",
        headers={"Authorization": f"Bearer {s.admin_token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(json.loads(r.read())["balance"])
    except (OSError, ValueError, KeyError) as exc:
        log.warning("cannot read the balance of %s: %s", account, exc)
        return None


def install(settings: Settings, classes: list[str]) -> None:
    """Register the test_start / quitting listeners for a run with ``classes``."""
    start_balances: dict[str, int | None] = {}
    snapshots: dict[str, dict[str, Any]] = {}  # master: each worker's last (cumulative) tally

    @events.init.add_listener
    def _init(environment: Any, **_kw: Any) -> None:
        runner = environment.runner
        if not isinstance(runner, WorkerRunner):
            # before any user runs (a master's test_start may come after its workers began)
            for account in set(settings.credit_accounts):
                start_balances[account] = _balance(settings, account)
        if isinstance(runner, MasterRunner):

            def keep(msg: Any, **_kw: Any) -> None:
                snapshots[str(msg.node_id)] = msg.data  # cumulative: a repeated send replaces

            runner.register_message("popgate_tally", keep)

    @events.test_start.add_listener
    def _start(environment: Any, **_kw: Any) -> None:
        tally_of(environment)

    @events.test_stop.add_listener
    def _send(environment: Any, **_kw: Any) -> None:
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            tally = tally_of(environment)
            runner.send_message("popgate_tally", tally.to_wire())

    @events.quitting.add_listener
    def _gate(environment: Any, **_kw: Any) -> None:
        if isinstance(environment.runner, WorkerRunner):
            return
        tally = tally_of(environment)
        for wire in snapshots.values():
            tally.merge(wire)
        total = environment.stats.total
        problems: list[str] = []
        # Credits: each request that got through cost exactly the price, once.
        for account, before in start_balances.items():
            after = _balance(settings, account)
            if before is None or after is None:
                continue
            spent, paid = before - after, tally.paid_accounts[account] * settings.price
            slack = tally.uncertain["credits"] * settings.price
            if not paid <= spent <= paid + slack:
                tally.breach(
                    "credits_not_charged_once",
                    f"{account}: balance fell by {spent}, requests through cost {paid}",
                )
        if tally.breaches:
            problems.append(f"security: {sum(tally.breaches.values())} breaches {dict(tally.breaches)}")
        if total.num_requests == 0:
            problems.append("no requests were made")
        elif total.fail_ratio > settings.max_fail_ratio:
            problems.append(f"unexpected outcomes: {total.fail_ratio:.2%} > {settings.max_fail_ratio:.2%}")
        p95 = total.get_response_time_percentile(0.95) or 0
        if p95 > settings.max_p95_ms:
            problems.append(f"latency: p95 {p95:.0f} ms > {settings.max_p95_ms:.0f} ms")
        made = {
            name.split(" ", 1)[0] for (name, _m), e in environment.stats.entries.items() if e.num_requests
        }
        silent = [c for c in classes if c not in made]
        if settings.require_classes and silent:
            problems.append(f"user classes that made no request: {silent}")
        summary = {
            "workers": len(snapshots) or 1,
            "classes": classes,
            "silent_classes": silent,
            "problems": problems,
            "requests": total.num_requests,
            "failures": total.num_failures,
            "fail_ratio": total.fail_ratio,
            "p95_ms": p95,
            **tally.as_dict(),
        }
        if settings.summary:
            with open(settings.summary, "w", encoding="utf-8") as fh:
                json.dump(summary, fh, indent=2)
        for p in problems:
            log.error("GATE FAILED: %s", p)
        if problems:
            environment.process_exit_code = 1
        else:
            log.info("gate passed: %d requests, %d breaches", total.num_requests, 0)
