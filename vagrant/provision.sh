#!/usr/bin/env bash
# Provisions the nginx-canary demo VM (Debian 12) from the repository synced to
# /vagrant: nginx with the example site, demo app v1 and v2, and the daemon, all
# as systemd services. Run as root; `vagrant up` / `vagrant provision` do.
#
# Installs the files the repository ships, unchanged:
#   conf.d/nginx-canary-log-format.conf -> /etc/nginx/conf.d/
#   conf.d/nginx-canary-site.conf       -> /etc/nginx/conf.d/  (once: the daemon edits it)
#   conf.d/nginx-canary.example.yaml    -> /etc/nginx-canary/config.yaml
#   systemd/nginx-canary.service, vagrant/nginx-canary-demo-app@.service -> /etc/systemd/system/
#
# Idempotent: every step checks first and acts only on a difference, so a
# second run installs, writes, reloads and restarts nothing.
set -euo pipefail
umask 022

REPO=${REPO:-/vagrant}
# Tests only: install under this directory instead of / (tests/test_vagrant.py
# runs this script twice there, with stand-ins for systemctl, apt-get and nginx).
ROOT=${PROVISION_ROOT:-}
VENV=$ROOT/opt/nginx-canary
# The demo apps' ports: the servers of upstream `backend` in conf.d/nginx-canary-site.conf.
V1_PORT=8081
V2_PORT=8082
# Debian packages: nginx; python3-venv for the venv; gcc and python3-dev build the
# optional C accelerator of the log analysis; curl for trying it out.
PACKAGES=(nginx python3-venv gcc python3-dev curl)

changes=0
nginx_changed=0
units_changed=0
code_changed=0
apps_changed=0
daemon_unit_changed=0
daemon_config_changed=0

say() {
	printf 'provision: %s\n' "$*"
}

# install_file MODE SOURCE DEST: copy SOURCE to DEST unless DEST already has
# the same bytes and mode. Returns 0 when it copied, 1 when nothing changed.
# (It is called as an `if` condition, where `set -e` is off: failures exit explicitly.)
install_file() {
	local mode=$1 src=$2 dest=$3
	if [ ! -f "$src" ]; then
		say "missing in the repository: $src" >&2
		exit 1
	fi
	if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
		return 1
	fi
	install -D -m "$mode" "$src" "$dest" || exit 1
	say "installed $dest"
	changes=$((changes + 1))
	return 0
}

# install_once MODE SOURCE DEST: copy SOURCE to DEST only if DEST does not exist.
# For files nginx-canary edits in place: provisioning again must not undo a rollout.
install_once() {
	local mode=$1 src=$2 dest=$3
	if [ -e "$dest" ]; then
		return 1
	fi
	install_file "$mode" "$src" "$dest"
}

# write_file MODE DEST TEXT: like install_file, with the content given.
write_file() {
	local mode=$1 dest=$2 text=$3 tmp
	tmp=$(mktemp) || exit 1
	printf '%s\n' "$text" >"$tmp" || exit 1
	if install_file "$mode" "$tmp" "$dest"; then
		rm -f "$tmp"
		return 0
	fi
	rm -f "$tmp"
	return 1
}

# The files `pip install` builds from, hashed: the package is reinstalled only when they change.
source_hash() {
	local paths=() path
	for path in pyproject.toml setup.py setup.cfg MANIFEST.in README.md LICENSE nginx_canary; do
		if [ -e "$REPO/$path" ]; then
			paths+=("$path")
		fi
	done
	(cd "$REPO" && find "${paths[@]}" -type f ! -name '*.pyc' ! -name '*.so' ! -path '*/__pycache__/*' -print0 |
		LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

enable_unit() {
	if ! systemctl is-enabled --quiet "$1"; then
		systemctl enable --quiet "$1"
		say "enabled $1"
		changes=$((changes + 1))
	fi
}

# restart_or_start UNIT CHANGED: restart a changed unit, start one that is not running.
restart_or_start() {
	local unit=$1 changed=$2
	if [ "$changed" -ne 0 ]; then
		systemctl restart "$unit"
		say "restarted $unit"
	elif ! systemctl is-active --quiet "$unit"; then
		systemctl start "$unit"
		say "started $unit"
		changes=$((changes + 1))
	fi
}

if [ "$(id -u)" -ne 0 ]; then
	say "run me as root" >&2
	exit 1
fi
if [ ! -f "$REPO/pyproject.toml" ]; then
	say "no repository at $REPO (set REPO=/path/to/nginx-canary)" >&2
	exit 1
fi

# -- Debian packages ---------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f="\${Status}" "$pkg" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$pkg")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	changes=$((changes + 1))
fi

# -- nginx-canary in a venv, from the synced folder -----------------------------------
if [ ! -x "$VENV/bin/python" ]; then
	python3 -m venv "$VENV"
	say "created $VENV"
	changes=$((changes + 1))
fi
wanted_hash=$(source_hash)
installed_hash=$(cat "$VENV/.installed-from" 2>/dev/null || true)
if [ "$wanted_hash" != "$installed_hash" ]; then
	say "installing nginx-canary from $REPO into $VENV"
	"$VENV/bin/pip" install --quiet --disable-pip-version-check "$REPO"
	printf '%s\n' "$wanted_hash" >"$VENV/.installed-from"
	code_changed=1
	changes=$((changes + 1))
fi
if [ "$(readlink "$ROOT/usr/local/bin/nginx-canary" || true)" != "$VENV/bin/nginx-canary" ]; then
	mkdir -p "$ROOT/usr/local/bin"
	ln -sfn "$VENV/bin/nginx-canary" "$ROOT/usr/local/bin/nginx-canary"
	say "linked /usr/local/bin/nginx-canary"
	changes=$((changes + 1))
fi

# -- systemd units -----------------------------------------------------------------------
if install_file 0644 "$REPO/vagrant/nginx-canary-demo-app@.service" "$ROOT/etc/systemd/system/nginx-canary-demo-app@.service"; then
	units_changed=1
	apps_changed=1
fi
if install_file 0644 "$REPO/systemd/nginx-canary.service" "$ROOT/etc/systemd/system/nginx-canary.service"; then
	units_changed=1
	daemon_unit_changed=1
fi
if write_file 0644 "$ROOT/etc/default/nginx-canary-demo-app-v1" "PORT=$V1_PORT"; then
	apps_changed=1
fi
if write_file 0644 "$ROOT/etc/default/nginx-canary-demo-app-v2" "PORT=$V2_PORT"; then
	apps_changed=1
fi
if [ "$units_changed" -ne 0 ]; then
	systemctl daemon-reload
fi

# -- nginx: the canary log format and the example site -----------------------------------
if install_file 0644 "$REPO/conf.d/nginx-canary-log-format.conf" "$ROOT/etc/nginx/conf.d/nginx-canary-log-format.conf"; then
	nginx_changed=1
fi
if install_once 0644 "$REPO/conf.d/nginx-canary-site.conf" "$ROOT/etc/nginx/conf.d/nginx-canary-site.conf"; then
	nginx_changed=1
fi

# -- the daemon's config -------------------------------------------------------------------
if [ ! -d "$ROOT/etc/nginx-canary" ]; then
	install -d -m 0750 "$ROOT/etc/nginx-canary"
	changes=$((changes + 1))
fi
if install_file 0640 "$REPO/conf.d/nginx-canary.example.yaml" "$ROOT/etc/nginx-canary/config.yaml"; then
	daemon_config_changed=1
fi

# -- start everything, in dependency order -------------------------------------------------
for version in v1 v2; do
	enable_unit "nginx-canary-demo-app@$version.service"
	restart_or_start "nginx-canary-demo-app@$version.service" $((apps_changed + code_changed))
done

enable_unit nginx.service
if [ "$nginx_changed" -ne 0 ]; then
	nginx -t -q
fi
if ! systemctl is-active --quiet nginx.service; then
	systemctl start nginx.service
	say "started nginx"
	changes=$((changes + 1))
elif [ "$nginx_changed" -ne 0 ]; then
	systemctl reload nginx.service
	say "reloaded nginx"
fi

enable_unit nginx-canary.service
if [ $((code_changed + daemon_unit_changed)) -ne 0 ] || ! systemctl is-active --quiet nginx-canary.service; then
	restart_or_start nginx-canary.service $((code_changed + daemon_unit_changed))
elif [ $((daemon_config_changed + nginx_changed)) -ne 0 ]; then
	systemctl reload nginx-canary.service
	say "reloaded nginx-canary"
fi

if [ "$changes" -eq 0 ]; then
	say "nothing to change"
else
	say "done: nginx on port 8080 (forwarded to the host), v1 on $V1_PORT, v2 on $V2_PORT, rollout 'app'"
fi
