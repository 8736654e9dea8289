"""Upstream server parameters are checked as nginx checks them (nginx_canary.nginx.server_params)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginx_canary.errors import ConfigError
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.server_params import upstream_server

MISSING_SEMICOLON = """\
http {
    upstream backend {
        server 127.0.0.1:8001 weight=3
        server 127.0.0.1:8002;
    }
}
"""


@pytest.mark.parametrize("params", [
    (), ("weight=3",), ("down",), ("backup",), ("max_fails=0", "fail_timeout=10s"), ("max_conns=100",),
    ("resolve",), ("service=http",), ("slow_start=30s",), ("route=a",), ("drain",),
])
def test_parameters_nginx_accepts(params: tuple) -> None:
    server = upstream_server(["127.0.0.1:80", *params], "f.conf", 3)
    assert (server.address, server.params, server.file, server.line) == ("127.0.0.1:80", params, "f.conf", 3)


@pytest.mark.parametrize("param", ["weight=0", "weight=x", "weight=", "max_fails=-1", "fail_timeout=",
                                   "wieght=3", "Down", "127.0.0.1:8002", "server"])
def test_parameters_nginx_refuses(param: str) -> None:
    with pytest.raises(ConfigError) as info:
        upstream_server(["127.0.0.1:80", "weight=2", param], "f.conf", 3)
    assert info.value.message.startswith(f'invalid parameter "{param}"')
    assert (info.value.file, info.value.line) == ("f.conf", 3)


def test_missing_semicolon_names_the_line_nginx_names(tmp_path: Path) -> None:
    """nginx: `invalid parameter "server" in nginx.conf:4`; we add where the ";" is missing."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(MISSING_SEMICOLON)
    with pytest.raises(ConfigError) as info:
        load_config(str(conf))
    assert str(info.value) == f'{conf}:4: invalid parameter "server" (a ";" missing at the end of line 3?)'


def test_bad_parameter_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "up.conf").write_text("upstream u {\n    server a:1\n        max_fails=1\n        bogus;\n}\n")
    conf = tmp_path / "nginx.conf"
    conf.write_text("http {\n    include up.conf;\n}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(conf))
    assert str(info.value) == f'{tmp_path / "up.conf"}:4: invalid parameter "bogus"'


def test_server_blocks_and_stream_upstreams(tmp_path: Path) -> None:
    """`server {` blocks are not upstream servers; stream upstreams are checked too."""
    conf = tmp_path / "nginx.conf"
    conf.write_text("http { server { listen 80 default_server reuseport; } }\n"
                    "stream { upstream s { server 127.0.0.1:5 weight=2 backup; } }\n")
    assert load_config(str(conf)).upstreams[0].servers[0].params == ("weight=2", "backup")
    conf.write_text("stream { upstream s { server 127.0.0.1:5 weight=2 server; } }\n")
    with pytest.raises(ConfigError, match='invalid parameter "server"'):
        load_config(str(conf))
