"""The "split" strategy: formats joined by one separator byte no value holds."""

from __future__ import annotations

from nginx_canary.logs.split_strategy import SplitLayout, split_strategy
from nginx_canary.logs.syntax import pattern_segments
from tests.logs.test_format import compiled


def test_split_strategy_only_for_one_separator_no_value_holds() -> None:
    assert split_strategy(pattern_segments("$host $uri"), "default") is None
    assert split_strategy(pattern_segments("$host\t$uri,$status"), "default") is None
    assert split_strategy(pattern_segments("$host\t$uri"), "none") is None
    strategy = split_strategy(pattern_segments("<$host\t$uri\t$host>"), "default")
    assert strategy is not None
    # a variable written twice is read at its first field
    assert strategy.layout(["uri", "host"]) == SplitLayout(b"\t", 3, (1, 0), b"<", b">")
    assert strategy.extract([b"<a\t/b\tc>\n", b"<a\t/b>"], ["host"]) == ([(b"a",)], 1)


def test_split_with_frame() -> None:
    fmt = compiled("<$host\t$uri>")
    assert fmt.strategy == "split"
    lines = [b"<a\t/b>", b"<a\t/b>\n", b"<c\t/d>\r\n", b"a\t/b>", b"<a\t/b", b"<a\t/b\t/c>"]
    assert fmt.extract(lines, ["uri", "host"]) == ([(b"/b", b"a"), (b"/b", b"a"), (b"/d", b"c")], 3)
    assert fmt.parse(b"<a\t/b>") == {"host": "a", "uri": "/b"}
    assert fmt.parse(b"<a\t/b") is None
