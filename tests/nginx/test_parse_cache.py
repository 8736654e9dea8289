"""The parse cache: unchanged files are not parsed again; a bad, foreign or planted cache is never trusted."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.parse_cache import ParseCache
from tests.nginx.conf_files import write


def test_parse_cache_reuses_unchanged_files_and_sees_changes(tmp_path):
    conf = write(tmp_path, {
        "nginx.conf": "events {}\nhttp {\n  include conf.d/*.conf;\n}\n",
        "conf.d/a.conf": "upstream a { server 1.1.1.1:80; }\n",
    })
    cache_path = tmp_path / "cache.json"
    first = load_config(str(conf), ParseCache(str(cache_path)))
    assert cache_path.exists() and json.loads(cache_path.read_bytes())["version"] > 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["cache.json", "nginx.conf"]  # no temp file left
    cache = ParseCache(str(cache_path))
    assert cache.get(str(tmp_path / "conf.d/a.conf")) is not None
    again = load_config(str(conf), cache)
    assert again == first
    a = tmp_path / "conf.d/a.conf"
    a.write_text("upstream a { server 1.1.1.1:80 weight=7; }\n")
    os.utime(a, ns=(1, 1))  # a different mtime even on a coarse clock
    changed = load_config(str(conf), ParseCache(str(cache_path)))
    assert changed.upstream("a").servers[0].weight == 7


class Planted:
    """A pickle that, if ever unpickled, creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def one_upstream(tmp_path: Path) -> Path:
    return write(tmp_path, {"nginx.conf": "events {}\nhttp { upstream a { server 1.1.1.1:80; } }\n"})


@pytest.mark.parametrize("content", [
    b"not json", b"[]", b'{"version": 3}', b'{"version": 3, "entries": []}', b"[" * 100000,
    pickle.dumps({"version": 2, "entries": {}}),
])
def test_unreadable_cache_is_ignored(tmp_path, content):
    conf = one_upstream(tmp_path)
    cache_path = tmp_path / "cache.json"
    cache_path.write_bytes(content)
    assert load_config(str(conf), ParseCache(str(cache_path))).upstream("a").servers[0].address == "1.1.1.1:80"


@pytest.mark.parametrize("tree", [
    "x", [1], [{"directive": "upstream", "line": "1", "args": ["a"]}], [{"directive": "upstream", "line": 1, "args": [2]}],
    [{"directive": "http", "line": 1, "args": [], "block": [{"directive": 1}]}],
])
def test_a_cached_tree_of_the_wrong_shape_is_parsed_again(tmp_path, tree):
    conf = one_upstream(tmp_path)
    cache_path = tmp_path / "cache.json"
    st = os.stat(conf)
    key = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    cache_path.write_text(json.dumps({"version": ParseCache.VERSION, "entries": {str(conf): [key, tree]}}))
    assert load_config(str(conf), ParseCache(str(cache_path))).upstream("a").servers[0].address == "1.1.1.1:80"


def test_a_pickle_is_never_loaded(tmp_path):
    """A pickle planted at the cache's path (or at the old name) is data that fails to parse, never code."""
    conf = one_upstream(tmp_path)
    marker = tmp_path / "marker"
    for name in ("cache.json", "parse-cache.pickle"):
        (tmp_path / name).write_bytes(pickle.dumps(Planted(marker)))
    pickle.loads((tmp_path / "cache.json").read_bytes()).close()  # the planted pickle works when unpickled
    marker.unlink()
    load_config(str(conf), ParseCache(str(tmp_path / "cache.json")))
    assert not marker.exists()


def test_the_cache_never_writes_through_a_planted_symlink(tmp_path):
    conf = one_upstream(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    cache_path = tmp_path / "cache.json"
    # The names a predictable temporary file would have had, and the cache file itself.
    for name in (f"cache.json.{os.getpid()}.tmp", "cache.json.tmp", f".cache.json.{os.getpid()}.tmp"):
        (tmp_path / name).symlink_to(victim)
    load_config(str(conf), ParseCache(str(cache_path)))
    assert victim.read_bytes() == b"precious"
    assert cache_path.is_file() and not cache_path.is_symlink()
    cache_path.unlink()
    cache_path.symlink_to(victim)
    cache = ParseCache(str(cache_path))  # read through the link: no (O_NOFOLLOW)
    assert cache.get(str(conf)) is None
    load_config(str(conf), cache)
    assert victim.read_bytes() == b"precious" and not cache_path.is_symlink()
