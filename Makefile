# Set-up and checks for nginx-canary. `make test` is what CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test venv nginx test-tools goaccess bench clean demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Debian packages the tests drive for real (command:package): nginx for the
# integration tests, systemd-analyze for the unit's checks.
TEST_TOOLS := nginx:nginx systemd-analyze:systemd

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

bench: venv nginx goaccess
	PATH="/usr/sbin:$$PATH" $(PY) bench/bench_set_weight.py
	$(PY) bench/bench_analyze.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
