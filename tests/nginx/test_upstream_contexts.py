"""Upstream lookup by name across http {} and stream {}: nginx keeps their upstreams apart."""

from __future__ import annotations

import pytest

from nginx_canary.errors import BadInputError, ConfigError
from nginx_canary.nginx.conf import load_config

CONF = """\
events {}
http {
    upstream web { server 10.0.0.1:80; }
    upstream twin { server 10.0.0.2:80; }
}
stream {
    upstream twin { server 10.0.0.3:5432; }
    upstream db { server 10.0.0.4:5432; }
}
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "nginx.conf"
    path.write_text(CONF)
    return load_config(str(path))


def test_the_http_twin_by_default_and_either_on_request(config):
    assert config.upstream("twin").servers[0].address == "10.0.0.2:80"
    assert config.upstream("twin", "http").context == "http"
    assert config.upstream("twin", "stream").servers[0].address == "10.0.0.3:5432"
    assert config.other_contexts(config.upstream("twin")) == ("stream",)
    assert config.other_contexts(config.upstream("web")) == ()


def test_an_upstream_in_one_context_only_is_found_without_one(config):
    assert config.upstream("db").context == "stream"
    assert config.upstream("web").context == "http"


def test_wrong_context_unknown_context_and_true_duplicates(config, tmp_path):
    with pytest.raises(BadInputError, match=r"no upstream named 'db' in http \{\} of .*; it is defined in stream \("):
        config.upstream("db", "http")
    with pytest.raises(BadInputError, match="context must be one of http, stream, got 'mail'"):
        config.upstream("web", "mail")
    path = tmp_path / "dup.conf"
    path.write_text(CONF.replace("upstream db", "upstream twin"))
    dup = load_config(str(path))
    assert dup.upstream("twin").context == "http"  # the http one is still one
    with pytest.raises(ConfigError, match="upstream 'twin' is defined 2 times: .*dup.conf:7, .*dup.conf:8"):
        dup.upstream("twin", "stream")
