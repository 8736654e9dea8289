"""Reading a config tree: includes as nginx resolves them, what the model gets from it, errors with file:line."""

from __future__ import annotations

import pytest

from nginx_canary.errors import ConfigError
from nginx_canary.nginx.conf import load_config
from nginx_canary.nginx.parse_cache import ParseCache
from tests.nginx.conf_files import write


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
