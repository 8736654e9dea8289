"""Attribution per field, memoized, against the whole-tuple reference through split_attempts."""

from __future__ import annotations

from typing import List, Optional, Tuple

from hypothesis import HealthCheck, given, settings, strategies as st

from nginx_canary.logs.attribution import Attributor, Keys
from nginx_canary.logs.format import FormatSpec, compile_format

DECODERS = {escape: compile_format(FormatSpec("t", "$a\t$b", escape)).decode for escape in ("default", "json", "none")}


def targets(address: str, via: Optional[str]) -> Keys:
    # an address of upstream "other" is filtered out (no keys), as --upstream does
    if address.startswith("9."):
        return ()
    if via not in (None, "-", "", "app"):
        return ("forced:" + address,)
    return ("server:" + address, "upstream:app") if address[0].isdigit() else ("server:" + address,)


def attributor(escape: str = "default", single_status: bool = False, single_seconds: bool = False,
               memo_limit: int = 100_000) -> Attributor:
    return Attributor(DECODERS[escape], targets, single_status=single_status, single_seconds=single_seconds,
                      memo_limit=memo_limit)


def test_one_attempt() -> None:
    a = attributor()
    assert a((b"10.0.0.1:80", b"200", b"0.012")) == [(("server:10.0.0.1:80", "upstream:app"), 200, 0.012)]
    assert a((b"unix:/run/app.sock", b"-", b"-")) == [(("server:unix:/run/app.sock",), None, None)]
    assert a((b"9.0.0.1:80", b"502", b"0.001")) == [((), 502, 0.001)]
    assert a((b"-", b"-", b"-")) == [] and a((b"", b"", b"")) == []
    assert a((b"not an address!", b"200", b"0.1")) is None


def test_retries_and_redirects() -> None:
    a = attributor()
    assert a((b"10.0.0.1:80, 10.0.0.2:80 : 10.0.0.3:80", b"502, 200 : 404", b"0.001, 0.020 : 0.003")) == [
        (("server:10.0.0.1:80", "upstream:app"), 502, 0.001),
        (("server:10.0.0.2:80", "upstream:app"), 200, 0.02),
        (("server:10.0.0.3:80", "upstream:app"), 404, 0.003),
    ]
    assert a((b"10.0.0.1:80, -", b"502", b"0.001, 0.5, 7")) == [(("server:10.0.0.1:80", "upstream:app"), 502, 0.001)]
    assert a((b"10.0.0.1:80, bad address", b"502, 200", b"0.1, 0.2")) is None
    only_status = attributor(single_status=True, single_seconds=True)
    assert only_status((b"10.0.0.1:80, 10.0.0.2:80 : 10.0.0.3:80", b"200", b"0.031")) == [
        (("server:10.0.0.1:80", "upstream:app"), 502, None),
        (("server:10.0.0.2:80", "upstream:app"), None, None),
        (("server:10.0.0.3:80", "upstream:app"), 200, 0.031),
    ]


def test_proxy_host_applies_to_the_last_redirect_group_only() -> None:
    a = attributor()
    # a request forced through another upstream: its attempts count apart
    assert a((b"10.0.0.1:80, 10.0.0.2:80", b"502, 200", b"0.001, 0.002", b"app_canary")) == [
        (("forced:10.0.0.1:80",), 502, 0.001), (("forced:10.0.0.2:80",), 200, 0.002)]
    assert a((b"10.0.0.1:80", b"200", b"0.001", b"app")) == [(("server:10.0.0.1:80", "upstream:app"), 200, 0.001)]
    assert a((b"10.0.0.1:80", b"200", b"0.001", b"-")) == [(("server:10.0.0.1:80", "upstream:app"), 200, 0.001)]
    # $proxy_host names the last proxy_pass: an error_page redirect's earlier group keeps its own attribution
    assert a((b"10.0.0.1:80 : 10.0.0.2:80", b"500 : 200", b"0.001 : 0.002", b"app_canary")) == [
        (("server:10.0.0.1:80", "upstream:app"), 500, 0.001), (("forced:10.0.0.2:80",), 200, 0.002)]


RAW_PARTS = st.sampled_from([b"10.0.0.1:80", b"10.0.0.2:80", b"9.1.1.1:80", b"[::1]:8080", b"unix:/s", b"app", b"-",
                             b"", b" ", b", ", b" : ", b",", b":", b"200", b"502", b"0.012", b"1.5", b"007", b"x y",
                             b"\\x22", b"\\u00e9", b"\\\\", b'\\"', b"\xc3\xa9", b"\xff", b"\t", b"12e3", b".5"])
RAW_VALUE = st.lists(RAW_PARTS, max_size=7).map(b"".join)


VIA = st.sampled_from([b"app", b"app_canary", b"-", b"", b"\\x09"])


@given(st.lists(st.tuples(RAW_VALUE, RAW_VALUE, RAW_VALUE), min_size=1, max_size=30),
       st.sampled_from(["default", "json", "none"]), st.booleans(), st.booleans(), st.integers(1, 5),
       st.one_of(st.none(), st.lists(VIA, min_size=30, max_size=30)))
@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
def test_per_field_attribution_matches_split_attempts(raws: Tuple[Tuple[bytes, bytes, bytes], ...], escape: str,
                                                      single_status: bool, single_seconds: bool, limit: int,
                                                      vias: Optional[List[bytes]]) -> None:
    a = attributor(escape, single_status, single_seconds, memo_limit=limit)
    if vias is not None:
        raws = tuple(raw + (via,) for raw, via in zip(raws, vias))
    for raw in [*raws, *raws]:  # the second time from the memos (those a small limit kept)
        assert a(raw) == a.full(raw), raw
