"""Reading a config tree: includes as nginx resolves them, the upstream model, errors with file:line."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from nginx_canary.errors import BadInputError, ConfigError
from nginx_canary.nginx.conf import ParseCache, load_config, servers_named


def write(root: Path, files: dict) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "nginx.conf"


def test_upstreams_through_glob_includes_relative_to_conf_dir(tmp_path, monkeypatch):
    conf = write(tmp_path, {
        "nginx.conf": "pid run/nginx.pid;\nerror_log logs/err.log;\nevents {}\nhttp {\n  include sites/*.conf;\n}\n",
        "sites/b.conf": "upstream beta {\n  server 10.0.0.2:80 weight=3 max_fails=2;\n  server 10.0.0.3:80 backup;\n}\n",
        "sites/a.conf": "upstream alpha {\n  server unix:/run/a.sock down;\n}\n",
        "sites/ignored.txt": "upstream nope { server 1.1.1.1; }\n",
    })
    monkeypatch.chdir("/")  # includes resolve against the conf dir, not the cwd
    config = load_config(str(conf))
    assert [u.name for u in config.upstreams] == ["alpha", "beta"]  # sorted glob order
    beta = config.upstream("beta")
    assert beta.file == str(tmp_path / "sites/b.conf") and beta.line == 1 and beta.context == "http"
    first, backup = beta.servers
    assert (first.address, first.weight, first.flags, first.line) == ("10.0.0.2:80", 3, ("max_fails=2",), 2)
    assert backup.backup and not backup.down and backup.weight == 1
    assert config.upstream("alpha").servers[0].down
    assert config.pid == "run/nginx.pid"
    assert config.error_logs == ("logs/err.log",)
    assert config.files == (str(conf), str(tmp_path / "sites/a.conf"), str(tmp_path / "sites/b.conf"))


def test_include_inside_upstream_block(tmp_path):
    conf = write(tmp_path, {
        "nginx.conf": "events {}\nhttp {\n  upstream app {\n    include app-servers.conf;\n  }\n}\n",
        "app-servers.conf": "# generated\nserver 127.0.0.1:1 weight=2;\nserver 127.0.0.1:2;\n",
    })
    app = load_config(str(conf)).upstream("app")
    assert [(s.address, s.file, s.line) for s in app.servers] == [
        ("127.0.0.1:1", str(tmp_path / "app-servers.conf"), 2),
        ("127.0.0.1:2", str(tmp_path / "app-servers.conf"), 3),
    ]


def test_stream_upstreams_and_shares(tmp_path):
    conf = write(tmp_path, {"nginx.conf": (
        "events {}\nstream {\n  upstream db {\n    server 127.0.0.1:5432 weight=3;\n"
        "    server 127.0.0.1:5433;\n    server 127.0.0.1:5434 down;\n    server 127.0.0.1:5435 backup;\n  }\n}\n"
    )})
    db = load_config(str(conf)).upstream("db")
    assert db.context == "stream"
    assert [db.share_percent(s) for s in db.servers] == [75.0, 25.0, 0.0, 0.0]


def test_missing_plain_include_is_an_error_with_location(tmp_path):
    conf = write(tmp_path, {"nginx.conf": "events {}\nhttp {\n  include missing.conf;\n}\n"})
    with pytest.raises(ConfigError) as info:
        load_config(str(conf))
    assert str(info.value).startswith(f"{conf}:3:")


def test_glob_matching_nothing_is_fine(tmp_path):
    conf = write(tmp_path, {"nginx.conf": "events {}\nhttp {\n  include none/*.conf;\n}\n"})
    assert load_config(str(conf)).upstreams == ()


def test_syntax_error_names_file_and_line(tmp_path):
    conf = write(tmp_path, {"nginx.conf": "events {}\nhttp {\n  include x.conf;\n}\n", "x.conf": "upstream a {\n  server 1.2.3.4;\n"})
    with pytest.raises(ConfigError) as info:
        load_config(str(conf))
    assert str(tmp_path / "x.conf") in str(info.value)


def test_include_loop_is_an_error(tmp_path):
    conf = write(tmp_path, {"nginx.conf": "events {}\nhttp {\n  include a.conf;\n}\n", "a.conf": "include a.conf;\n"})
    with pytest.raises(ConfigError, match="include loop"):
        load_config(str(conf))


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


def test_modules_loaded_at_the_main_level_are_known(tmp_path):
    conf = write(tmp_path, {
        "nginx.conf": "load_module modules/a.so;\ninclude modules.d/*.conf;\nevents {}\nhttp {}\n",
        "modules.d/b.conf": "load_module /usr/lib/nginx/modules/b.so;\n",
    })
    config = load_config(str(conf))
    assert config.modules == ("modules/a.so", "/usr/lib/nginx/modules/b.so")
    assert load_config(str(conf), ParseCache(str(tmp_path / "cache.json"))).modules == config.modules


def test_log_formats_access_logs_and_where_upstreams_are_proxied(tmp_path):
    conf = write(tmp_path, {
        "nginx.conf": (
            "events {}\nhttp {\n"
            "  log_format canary escape=json '$msec\\t' '$upstream_addr';\n"
            "  access_log logs/all.log;\n"
            "  upstream app { server 127.0.0.1:1; }\n  upstream api { server 127.0.0.1:2; }\n"
            "  upstream quiet { server 127.0.0.1:3; }\n  upstream dflt { server 127.0.0.1:4; }\n"
            "  include site.conf;\n"
            "}\n"
        ),
        "site.conf": (
            "server {\n  location / { proxy_pass http://app; }\n"
            "  location /api/ { proxy_pass http://api/v1/; }\n"
            "  location /q { access_log off; proxy_pass http://quiet; }\n"
            "  include logs.conf;\n"
            "}\n"
        ),
        "logs.conf": "access_log logs/canary.log canary;\naccess_log logs/plain.log;\n",
    })
    config = load_config(str(conf))
    fmt = config.log_format("canary")
    assert fmt.args == ("canary", "escape=json", "$msec\t", "$upstream_addr") and fmt.line == 3
    assert config.log_format("nope") is None
    app_logs = config.access_logs_for("app")
    # the server level's own access_log directives (from an include, after the locations) win over http's
    assert [(log.path, log.format) for log in app_logs] == [("logs/canary.log", "canary"), ("logs/plain.log", "combined")]
    assert config.access_logs_for("api") == app_logs
    assert config.access_logs_for("quiet") == ()
    assert config.access_logs_for("dflt") == ()  # never proxied to
    assert {log.path for log in config.access_logs} == {"logs/all.log", "logs/canary.log", "logs/plain.log"}


def test_without_any_access_log_the_compiled_default_applies(tmp_path):
    conf = write(tmp_path, {"nginx.conf": (
        "events {}\nhttp {\n  upstream app { server 127.0.0.1:1; }\n"
        "  server { location / { proxy_pass http://app; } }\n}\n"
    )})
    (log,) = load_config(str(conf)).access_logs_for("app")
    assert (log.path, log.format) == (None, "combined")
