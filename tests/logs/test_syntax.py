"""How nginx writes values: pattern segments, value syntax per escape mode, decoding."""

from __future__ import annotations

from nginx_canary.logs.syntax import DECODERS, ENTRY_BYTES, pattern_segments, value_syntax
from tests.logs.test_format import compiled


def test_pattern_segments_merge_literals_and_read_both_variable_spellings() -> None:
    assert pattern_segments("${host}_$status $ x$uri") == ["host", b"_", "status", b" $ x", "uri"]
    assert pattern_segments("plain") == [b"plain"]
    assert pattern_segments("") == []


def test_value_syntax_per_escape_mode() -> None:
    tab, quote = ord("\t"), ord('"')
    assert tab in value_syntax("host", "default").never and quote in value_syntax("host", "default").never
    json = value_syntax("host", "json")
    assert tab in json.never and quote not in json.never and quote in json.stops
    assert value_syntax("host", "none").never == frozenset({ord("\n")})
    # nginx's own values keep their alphabet whatever the mode
    assert ord(" ") in value_syntax("status", "none").never
    assert value_syntax("upstream_status", "default").structure is not None
    assert value_syntax("host", "default").structure is None
    assert ord(",") not in ENTRY_BYTES["upstream_addr"]


def test_decoders_undo_each_mode() -> None:
    assert DECODERS["default"](b"\\x41\\x2") == "A\\x2"
    assert DECODERS["json"](b'\\"\\u00e9') == '"\u00e9'
    assert DECODERS["none"](b"\\x41") == "\\x41"


def test_default_escape_decoding() -> None:
    fmt = compiled('"$request" "$http_user_agent"')
    line = b'"GET /\\x22q\\x22\\x5C HTTP/1.1" "caf\\xC3\\xA9\\x09tab \\xFF"'
    assert fmt.parse(line) == {"request": 'GET /"q"\\ HTTP/1.1', "http_user_agent": "café\ttab \ufffd"}
    assert fmt.decode(b"a\\x2") == "a\\x2"  # a broken escape stays as it is
    assert fmt.decode(b"\\x4a\\x4A") == "JJ"


def test_json_escape_decoding() -> None:
    fmt = compiled('{"ua":"$http_user_agent","uri":"$uri"}', "json")
    line = b'{"ua":"say \\"hi\\" \\\\o/\\n\\u001F\\t caf\xc3\xa9","uri":"/\xe4\xb8\xad"}'
    assert fmt.parse(line) == {"http_user_agent": 'say "hi" \\o/\n\x1f\t café', "uri": "/中"}
    assert fmt.decode(b"\\ud83d\\ude00 \\/ \\q") == "\U0001F600 / \\q"
    assert fmt.decode(b"\xff") == "\ufffd"


def test_none_escape_is_verbatim() -> None:
    fmt = compiled("$host|$uri", "none")
    assert fmt.parse(b"a\\x41|/\"x\xc3\xa9") == {"host": "a\\x41", "uri": '/"xé'}


def test_json_not_found_is_empty_and_default_is_dash() -> None:
    assert compiled('"$upstream_addr" $status', "json").parse(b'"" 200') == {"upstream_addr": "", "status": "200"}
    assert compiled('"$upstream_addr" $status').parse(b'"-" 200') == {"upstream_addr": "-", "status": "200"}
