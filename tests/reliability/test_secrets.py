"""Tokens in gate, HTTP-check and webhook URLs never leave the daemon's HTTP client (issue #14, item 7).

Real nginx, the real daemon, real HTTP endpoints on loopback (a gate, a health
check and a webhook receiver, each a small HTTP server of this test; a second
webhook whose port is closed). Every URL holds secrets in its
``user:password@``, its path, its query and its fragment. A rollout waits at
its ``pre_rollout`` gate (403), goes on when the gate opens, and is rolled back
when the health check starts answering 503. Then every place the daemon or
the CLI writes to is searched for each secret: the daemon's log, every file in
the state dir, ``status`` and ``history`` (text and JSON), the HTML report, and
every webhook body. Only scheme, host and port may show; the endpoints must
have been called with the whole URL (so the secrets were really in use).
"""

from __future__ import annotations

import json
from typing import Dict, Iterator, List

import pytest

from nginx_canary.demo.nginx_harness import free_port
from tests.reliability.conftest import history, wait_for
from tests.integrations.test_webhooks import Receiver

SECRETS = ("GATEPASS", "GATEPATHTOKEN", "GATEQUERYTOKEN", "GATEFRAGTOKEN", "CHECKPATHTOKEN", "CHECKQUERYTOKEN",
           "HOOKPASS", "HOOKPATHTOKEN", "HOOKQUERYTOKEN", "DEADHOOKTOKEN")


@pytest.fixture
def endpoints() -> Iterator[Dict[str, Receiver]]:
    made = {"gate": Receiver(status=403), "check": Receiver(status=200), "hook": Receiver(status=200)}
    yield made
    for receiver in made.values():
        receiver.close()


def test_no_secret_of_a_url_shows_anywhere(rel_harness, endpoints, tmp_path):
    gate, check, hook = endpoints["gate"], endpoints["check"], endpoints["hook"]
    dead = free_port()
    h = rel_harness(steps=(10, 100), step_interval="1h", backends="nginx", daemon=False)
    site = h.site
    urls = {
        "gate": f"http://ci:GATEPASS@127.0.0.1:{gate.port}/gate/GATEPATHTOKEN?key=GATEQUERYTOKEN#GATEFRAGTOKEN",
        "check": f"http://127.0.0.1:{check.port}/health/CHECKPATHTOKEN?token=CHECKQUERYTOKEN",
        "hook": f"http://hooks:HOOKPASS@127.0.0.1:{hook.port}/services/HOOKPATHTOKEN?x=HOOKQUERYTOKEN",
        "dead": f"http://127.0.0.1:{dead}/services/DEADHOOKTOKEN",
    }
    text = site.daemon_config.read_text()
    assert "    analysis:\n" in text
    site.daemon_config.write_text(text.replace("    analysis:\n", (
        f"    gates:\n      pre_rollout: \"{urls['gate']}\"\n"
        f"    webhooks:\n      - \"{urls['hook']}\"\n      - {{url: \"{urls['dead']}\", timeout: 1s, retries: 0}}\n"
        f"    analysis:\n      http_checks:\n        - {{url: \"{urls['check']}\", timeout: 1s}}\n")))
    h.start_daemon()
    h.load(rate=100, duration=60, max_requests=6000)

    outputs: Dict[str, str] = {}
    h.start_rollout()
    waiting = h.wait_status(lambda s: "waiting for gate pre_rollout" in s["message"] and "403" in s["message"],
                            "the closed gate")
    outputs["status while waiting (json)"] = json.dumps(waiting)
    outputs["status while waiting"] = h.cli("status", "app").stdout
    gate.status = 200
    h.wait_status(lambda s: s["state"] == "progressing" and s["canary_percent"] == 10, "the first step")
    check.status = 503
    final = h.wait_state("rolled_back", "promoted", "aborted", "failed")
    assert final["state"] == "rolled_back" and "http_checks[0] (http://127.0.0.1:" in final["message"], final
    wait_for(lambda: "rolled_back" in [p["event"] for p in hook.payloads()], "the rolled_back webhook", h=h)
    wait_for(lambda: "webhook 2 (" in h.daemon_log() and "notification dropped" in h.daemon_log(),
             "the dead webhook's warning", h=h)

    for args in (("status", "app"), ("status", "app", "--json"), ("history", "app"), ("history", "app", "--json")):
        result = h.cli(*args)
        assert result.returncode == 0, result.stderr
        outputs[" ".join(args)] = result.stdout + result.stderr
    report = tmp_path / "report.html"
    result = h.cli("report", "app", "--output", str(report))
    assert result.returncode == 0, result.stderr
    outputs["report"] = report.read_text() + result.stdout + result.stderr
    outputs["daemon log"] = h.daemon_log()
    for path in sorted(site.state_dir.rglob("*")):
        if path.is_file():
            outputs[f"state file {path.relative_to(site.state_dir)}"] = path.read_bytes().decode("utf-8", "replace")
    for n, request in enumerate(hook.requests):
        outputs[f"webhook body {n}"] = request["body"].decode()

    leaks: List[str] = [f"{secret} in {where}" for where, text in outputs.items() for secret in SECRETS
                        if secret in text]
    assert not leaks, leaks
    # What does show: the gate, the check and both webhooks by scheme, host and port.
    everything = "\n".join(outputs.values())
    for port in (gate.port, check.port, dead):
        assert f"http://127.0.0.1:{port}" in everything, port
    assert f"webhook 2 (http://127.0.0.1:{dead})" in outputs["daemon log"]
    assert any(r["event"] == "gate" for r in history(site))
    assert {"started", "check_failed", "rolled_back"} <= {p["event"] for p in hook.payloads()}
    # The secrets were in use: each endpoint was called with its whole URL (the fragment is never sent).
    assert gate.requests[0]["path"] == "/gate/GATEPATHTOKEN?key=GATEQUERYTOKEN"
    assert check.requests[0]["path"] == "/health/CHECKPATHTOKEN?token=CHECKQUERYTOKEN"
    assert hook.requests[0]["path"] == "/services/HOOKPATHTOKEN?x=HOOKQUERYTOKEN"
    assert hook.requests[0]["headers"]["Authorization"].startswith("Basic ")
