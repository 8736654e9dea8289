"""Sticky split weights and the consistent-hash ring model (pure; the real-nginx test is test_sticky_nginx.py)."""

from __future__ import annotations

import random
import zlib
from fractions import Fraction

import pytest

from nginx_canary.config.settings import parse_settings
from nginx_canary.daemon.runtime import check_rollout_against_config
from nginx_canary.errors import BadInputError
from nginx_canary.nginx.chash import Ring, server_points
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.model import Upstream
from nginx_canary.nginx.split import compute_split
from nginx_canary.nginx.sticky import (STICKY_TOTAL, apportion, consistent_hash_key, require_consistent_hash,
                                       sticky_split)


def upstream(hash_args=None) -> Upstream:
    return Upstream("backend", "http", "/etc/nginx/conf.d/up.conf", 3, (), hash_args)


def walk(percents, canary=(1,), stable=(1, 1)):
    """The splits of a rollout over ``percents``, each computed from the weights the previous one left."""
    out = []
    for percent in percents:
        split = sticky_split(canary, stable, Fraction(percent))
        canary, stable = split.canary_weights, split.stable_weights
        out.append(split)
    return out


def test_consistent_hash_key_is_read_from_the_upstream():
    assert consistent_hash_key(upstream(("$cookie_uid", "consistent"))) == "$cookie_uid"
    assert consistent_hash_key(upstream(("$remote_addr",))) is None
    assert consistent_hash_key(upstream()) is None
    assert require_consistent_hash(upstream(("$cookie_uid$remote_addr", "consistent"))) == "$cookie_uid$remote_addr"


@pytest.mark.parametrize("args, says", [(None, "has no hash directive"), (("$remote_addr",), "(not consistent)")])
def test_sticky_without_consistent_hash_says_what_to_add(args, says):
    with pytest.raises(BadInputError) as info:
        require_consistent_hash(upstream(args))
    message = str(info.value)
    assert says in message and "hash $cookie_uid$remote_addr consistent;" in message
    assert "/etc/nginx/conf.d/up.conf:3" in message


def test_apportion_keeps_ratios_sums_and_gives_each_at_least_one():
    assert apportion(1000, [1, 1]) == [500, 500]
    assert apportion(900, [2, 1]) == [600, 300]
    assert apportion(3, [100, 1, 1]) == [1, 1, 1]
    assert apportion(12, [3, 2, 1]) == [6, 4, 2]
    assert apportion(6, [3, 2, 1]) == [3, 2, 1]
    with pytest.raises(BadInputError):
        apportion(2, [1, 1, 1])


@pytest.mark.parametrize("base", [[1], [1, 1], [3, 1], [5, 2, 2], [7, 1, 1, 3], [1, 1000, 13]])
def test_apportion_is_house_monotone_and_exact_at_its_own_sum(base):
    previous = apportion(len(base), base)
    for total in range(len(base) + 1, 1200):
        now = apportion(total, base)
        assert sum(now) == total
        assert all(a >= b for a, b in zip(now, previous)), (total, previous, now)
        previous = now
    assert apportion(sum(base), base) == list(base)


@pytest.mark.parametrize("seed", range(30))
def test_weights_are_monotonic_over_any_rising_step_list(seed):
    rng = random.Random(seed)
    steps = sorted({Fraction(rng.randint(1, 9999), 100) for _ in range(rng.randint(2, 12))}) + [Fraction(100)]
    canary = tuple(rng.randint(1, 5) for _ in range(rng.randint(1, 2)))
    stable = tuple(rng.randint(1, 5) for _ in range(rng.randint(1, 4)))
    splits = walk(steps, canary, stable)
    for before, after in zip(splits, splits[1:]):
        assert all(a >= b for a, b in zip(after.canary_weights, before.canary_weights)), (steps, splits)
        assert all(a <= b for a, b in zip(after.stable_weights, before.stable_weights)), (steps, splits)
    for percent, split in zip(steps[:-1], splits):
        assert sum(split.canary_weights) + sum(split.stable_weights) == STICKY_TOTAL
        assert abs(split.canary_percent() - percent) <= Fraction(1, 10) + Fraction(len(canary) * 100, STICKY_TOTAL)
    assert splits[-1].stable_down and not splits[-1].canary_down


def test_the_issue_steps_and_the_edges():
    splits = walk([1, 5, 10, 25, 50, 100])
    assert [s.canary_weights for s in splits] == [(10,), (50,), (100,), (250,), (500,), (998,)]
    assert [s.stable_weights for s in splits][:5] == [(495, 495), (475, 475), (450, 450), (375, 375), (250, 250)]
    zero = sticky_split((250,), (375, 375), Fraction(0))
    assert zero.canary_down and zero.canary_weights == (250,) and zero.stable_weights == (500, 500)
    assert sticky_split((1,), (450, 450), Fraction(10)) == sticky_split((1,), (450, 450), Fraction(10))
    again = sticky_split((100,), (450, 450), Fraction(10))
    assert (again.canary_weights, again.stable_weights) == ((100,), (450, 450))  # idempotent: nothing to write
    assert sticky_split((1,), (1,), Fraction(3333, 100)).canary_percent() == Fraction(333, 10)
    with pytest.raises(BadInputError):
        sticky_split((1,), (), Fraction(50))
    with pytest.raises(BadInputError):
        sticky_split((1,), (1,), Fraction(101))


def test_reduced_weights_are_not_monotonic_where_sticky_ones_are():
    # Today's per-request weights for 10 -> 25 -> 33.33 -> 40: the stable side goes 9 -> 3 -> 2 -> 3.
    stable = [compute_split([1], [1], Fraction(p)).stable_weights[0] for p in (10, 25, Fraction(3333, 100), 40)]
    assert stable == [9, 3, 2, 3]
    sticky = [s.stable_weights[0] for s in walk([10, 25, Fraction(3333, 100), 40], (1,), (1,))]
    assert sticky == sorted(sticky, reverse=True)


def test_points_depend_on_name_and_index_only():
    assert server_points("127.0.0.1:8081", 3) == server_points("127.0.0.1:8081", 5)[:480]
    assert len(server_points("a:1", 2)) == 320
    # crc32(HOST \0 PORT PREV): the first point of "example.com:80" by hand.
    assert server_points("example.com:80", 1)[0] == zlib.crc32(b"example.com\x0080\x00\x00\x00\x00")
    # No port (nor a unix socket's path) is split off a name that does not end in ":DIGITS".
    assert server_points("unix:/run/app.sock", 1)[0] == zlib.crc32(b"/run/app.sock\x00\x00\x00\x00\x00")
    assert server_points("backend.local", 1)[0] == zlib.crc32(b"backend.local\x00\x00\x00\x00\x00")


def test_ring_lookup_agrees_with_its_shares_and_walks_past_down_servers():
    ring = Ring([("10.0.0.1:80", 50), ("10.0.0.2:80", 450), ("10.0.0.3:80", 500)])
    shares = ring.shares()
    assert abs(sum(shares.values()) - 100) < 1e-9
    assert abs(shares["10.0.0.1:80"] - 5) < 0.5
    keys = [f"user-{n}" for n in range(20000)]
    hits = sum(ring.lookup(k) == "10.0.0.1:80" for k in keys) * 100 / len(keys)
    assert abs(hits - shares["10.0.0.1:80"]) < 0.5
    down = {"10.0.0.1:80"}
    assert all(ring.lookup(k, down) in ("10.0.0.2:80", "10.0.0.3:80") for k in keys[:2000])
    assert "10.0.0.1:80" not in ring.shares(down)
    assert ring.lookup("") is None  # nginx: round robin for an empty key
    assert Ring([("a:1", 1)]).lookup("x") == "a:1"


def test_sticky_shares_on_the_ring_are_within_a_few_tenths_of_the_target():
    names = ["192.0.2.10:8080", "192.0.2.11:8080", "192.0.2.12:8080"]
    for split, percent in zip(walk([1, 10, 25, 50]), [1, 10, 25, 50]):
        ring = Ring(list(zip(names, split.canary_weights + split.stable_weights)))
        assert abs(ring.shares()[names[0]] - percent) < 0.5, (percent, ring.shares())


STICKY_YAML = """\
rollouts:
  web:
    upstream: backend
    canary: [127.0.0.1:8082]
    sticky: {sticky}
"""


@pytest.mark.parametrize("block, sticky, problem", [
    ("hash $cookie_uid consistent;", "true", None),
    ("", "true", "has no hash directive"),
    ("hash $remote_addr;", "true", "(not consistent)"),
    ("", "false", None),
])
def test_a_rollout_asking_for_sticky_needs_consistent_hash(tmp_path, block, sticky, problem):
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n  upstream backend {\n    %s\n    server 127.0.0.1:8081;\n"
                    "    server 127.0.0.1:8082 down;\n  }\n}\n" % block)
    rollout = parse_settings(STICKY_YAML.format(sticky=sticky), "test.yaml").rollouts["web"]
    assert rollout.sticky is (sticky == "true")
    config = load_config(str(conf), logs=False)
    if problem is None:
        check_rollout_against_config(rollout, config)
    else:
        with pytest.raises(BadInputError) as info:
            check_rollout_against_config(rollout, config)
        assert str(info.value).startswith("rollout 'web': sticky needs 'hash KEY consistent;' in upstream 'backend'")
        assert problem in str(info.value)


def test_the_config_model_reads_the_hash_directive_through_includes(tmp_path):
    (tmp_path / "up.inc").write_text("hash $cookie_uid$remote_addr consistent;\n")
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n  upstream a {\n    include up.inc;\n    server 127.0.0.1:1;\n  }\n"
                    "  upstream b {\n    server 127.0.0.1:2;\n  }\n}\n")
    config = load_config(str(conf), logs=False)
    assert config.upstream("a").hash_args == ("$cookie_uid$remote_addr", "consistent")
    assert config.upstream("b").hash_args is None
