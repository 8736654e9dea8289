"""The daemon's rollout over a sticky upstream (``hash KEY consistent``, ``sticky: true``) on a real nginx.

The load sends no cookie, so the key here is ``$request_id``: each request
lands on the ring by the share its weights give (the per-key stickiness is
tested in tests/nginx/test_sticky_nginx.py and test_sticky_rollout.py).
"""

from __future__ import annotations

from tests.daemon.conftest import Harness

STICKY_LINE = "    hash $request_id consistent;\n"


def make_sticky(make_harness, **kwargs) -> Harness:
    h = make_harness(daemon=False, **kwargs)
    text = h.site.upstream_conf.read_text()
    h.site.upstream_conf.write_text(text.replace("upstream backend {\n", "upstream backend {\n" + STICKY_LINE))
    yaml = h.site.daemon_config.read_text()
    h.site.daemon_config.write_text(yaml.replace("    on_success:", "    sticky: true\n    on_success:"))
    h.site.nginx.reload()
    h.originals = h.site.config_files()
    h.start_daemon()
    return h


def test_a_healthy_canary_on_a_sticky_upstream_is_promoted(make_harness):
    h = make_sticky(make_harness, steps=(10, 50, 100), step_interval="1s")
    load = h.load(rate=150)
    started = h.start_rollout()
    assert (started["state"], started["canary_percent"]) == ("progressing", 10)
    assert "weight=100" in h.site.upstream_conf.read_text()  # out of 1000: the sticky weights
    final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
    seen = load.finish()
    assert final["state"] == "promoted", final["message"]
    assert seen.status_5xx == 0 and seen.versions.get("v2", 0) > 0, seen.summary()
    assert h.probe(50).versions == {"v2": 50}
    assert STICKY_LINE in h.site.upstream_conf.read_text()


def test_a_failing_canary_on_a_sticky_upstream_is_rolled_back(make_harness):
    h = make_sticky(make_harness, steps=(10, 50, 100), step_interval="1s", v2={"error_rate": 1.0})
    load = h.load(rate=150)
    h.start_rollout()
    final = h.wait_state("promoted", "rolled_back", "aborted", "failed")
    seen = load.finish()
    assert final["state"] == "rolled_back", final["message"]
    assert seen.status_5xx > 0 and set(seen.versions_5xx) == {"v2"}, seen.summary()
    assert h.site.config_files() == h.originals
    assert h.probe(50).versions == {"v1": 50}


def test_sticky_true_without_consistent_hash_is_refused_with_the_line_to_add(make_harness):
    h = make_harness(daemon=False)
    yaml = h.site.daemon_config.read_text()
    h.site.daemon_config.write_text(yaml.replace("    on_success:", "    sticky: true\n    on_success:"))
    result = h.cli("daemon", timeout=30)
    assert result.returncode != 0
    assert "sticky needs 'hash KEY consistent;' in upstream 'backend'" in result.stderr, result.stderr
    assert h.site.config_files() == h.originals
