"""The config model's queries: upstream shares, names looked up, canary servers named."""

from __future__ import annotations

import pytest

from nginx_canary.errors import BadInputError, ConfigError
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.model import servers_named
from tests.nginx.conf_files import write


def test_stream_upstreams_and_shares(tmp_path):
    conf = write(tmp_path, {"nginx.conf": (
        "events {}\nstream {\n  upstream db {\n    server 127.0.0.1:5432 weight=3;\n"
        "    server 127.0.0.1:5433;\n    server 127.0.0.1:5434 down;\n    server 127.0.0.1:5435 backup;\n  }\n}\n"
    )})
    db = load_config(str(conf)).upstream("db")
    assert db.context == "stream"
    assert [db.share_percent(s) for s in db.servers] == [75.0, 25.0, 0.0, 0.0]


def test_missing_and_duplicate_upstream_names(tmp_path):
    conf = write(tmp_path, {
        "nginx.conf": "events {}\nhttp {\n  include a.conf;\n  include b.conf;\n}\n",
        "a.conf": "upstream twin { server 1.1.1.1:80; }\n",
        "b.conf": "\nupstream twin { server 2.2.2.2:80; }\n",
    })
    config = load_config(str(conf))
    with pytest.raises(BadInputError, match="no upstream named 'nope'.*twin"):
        config.upstream("nope")
    with pytest.raises(ConfigError) as info:
        config.upstream("twin")
    assert f"{tmp_path}/a.conf:1" in str(info.value) and f"{tmp_path}/b.conf:2" in str(info.value)


def test_servers_named(tmp_path):
    conf = write(tmp_path, {"nginx.conf": (
        "events {}\nhttp {\n upstream u {\n  server a:1;\n  server b:1 backup;\n  server c:1;\n  server c:1;\n }\n}\n"
    )})
    u = load_config(str(conf)).upstream("u")
    assert [s.address for s in servers_named(u, ["a:1"])] == ["a:1"]
    with pytest.raises(BadInputError, match="not a server"):
        servers_named(u, ["z:1"])
    with pytest.raises(BadInputError, match="backup"):
        servers_named(u, ["b:1"])
    with pytest.raises(BadInputError, match="2 times"):
        servers_named(u, ["c:1"])
