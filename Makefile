# Set-up and checks for nginx-canary. `make test` is what CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test venv nginx test-tools goaccess wrk bench clean demo

$(VENV)/.installed: pyproject.toml setup.py nginx_canary/logs/_fieldcount.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Debian packages the tests drive for real (command:package): nginx for the
# integration tests, and the tools other tests run for real (unit checks, shell and
# Ruby syntax, Prometheus rules, the report in a browser, saturating load, the fleet's etcd), and the
# nginx modules real-world configs load (OpenResty's Lua blocks, stream {}).
TEST_TOOLS := nginx:nginx systemd-analyze:systemd shellcheck:shellcheck ruby:ruby promtool:prometheus chromium:chromium wrk:wrk etcd:etcd-server \
	/usr/lib/nginx/modules/ngx_http_lua_module.so:libnginx-mod-http-lua /usr/lib/nginx/modules/ngx_stream_module.so:libnginx-mod-stream

# Each installs what is missing when we can (root + apt), else says how.
nginx:
	@./.ci/ensure-tools nginx:nginx
	@echo "nginx: $$( (nginx -v || /usr/sbin/nginx -v) 2>&1)"

test-tools:
	@./.ci/ensure-tools $(TEST_TOOLS)

test: venv nginx test-tools
	NGINX_CANARY_REQUIRE_NGINX=1 PATH="/usr/sbin:$$PATH" $(PY) -m pytest -q

# The one-command tour: a private nginx, two app versions, load and the daemon, all on loopback.
demo: venv nginx
	PATH="/usr/sbin:$$PATH" $(VENV)/bin/nginx-canary demo

# GoAccess is the reference bench/bench_analyze.py compares against.
goaccess:
	@if command -v goaccess >/dev/null 2>&1; then \
		echo "goaccess: $$(goaccess --version 2>&1 | grep -m1 -o 'GoAccess - [0-9.]*[0-9]')"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq goaccess >/dev/null && \
		echo "goaccess: installed $$(goaccess --version 2>&1 | grep -m1 -o 'GoAccess - [0-9.]*[0-9]')"; \
	else \
		echo "goaccess is missing; install it with: sudo apt-get install -y goaccess" >&2; exit 1; \
	fi

# wrk is the saturating load of bench/bench_rollout.py.
wrk:
	@./.ci/ensure-tools wrk:wrk
	@echo "wrk: $$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"

bench: venv nginx goaccess wrk
	PATH="/usr/sbin:$$PATH" $(PY) bench/bench_set_weight.py
	$(PY) bench/bench_analyze.py
	PATH="/usr/sbin:$$PATH" $(PY) bench/bench_rollout.py
	$(PY) bench/bench_log_flood.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
