#!/usr/bin/env bash
# Provisions an nginx-canary demo VM (Debian 12) from the repository synced to
# /vagrant. Run as root; `vagrant up` / `vagrant provision` do.
#
#   provision.sh [ROLE]
#
# ROLE is what this VM is (default: demo):
#   demo   the one-VM demo (vagrant/Vagrantfile): nginx with the example site,
#          demo app v1 and v2 and the daemon, all as systemd services
#   etcd   the fleet's etcd (Debian's etcd-server), listening on ETCD_ADDR too
#   app    the fleet's app servers: demo app v1 and v2 on every address of the VM
#          (their /__admin still answers only from the VM itself)
#   nginx  a fleet host: nginx in front of APP_ADDR's apps and the daemon, its
#          YAML with a `fleet:` section (etcd ETCD_URL, fleet FLEET_NAME, host FLEET_HOST)
# (vagrant/fleet/Vagrantfile sets these variables for each VM.)
#
# Installs the files the repository ships, unchanged:
#   conf.d/nginx-canary-log-format.conf -> /etc/nginx/conf.d/           (demo, nginx)
#   conf.d/nginx-canary-site.conf       -> /etc/nginx/conf.d/  (once: the daemon edits it)  (demo)
#   conf.d/nginx-canary.example.yaml    -> /etc/nginx-canary/config.yaml (demo)
#   systemd/nginx-canary.service, vagrant/nginx-canary-demo-app@.service -> /etc/systemd/system/
# and writes the fleet host's site (once) and YAML from the variables above.
#
# Idempotent: every step checks first and acts only on a difference, so a
# second run installs, writes, reloads and restarts nothing.
set -euo pipefail
umask 022

ROLE=${1:-demo}
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
# The fleet (roles etcd, app, nginx): addresses on the VMs' private network.
ETCD_ADDR=${ETCD_ADDR:-}
ETCD_URL=${ETCD_URL:-}
APP_ADDR=${APP_ADDR:-}
FLEET_NAME=${FLEET_NAME:-shop}
FLEET_HOST=${FLEET_HOST:-}
ETCD_PORT=2379
# The site every fleet host serves (the example site's name: it must sort after the log format
# it uses, as Debian's nginx.conf reads conf.d/*.conf in name order), and the log the daemon reads.
FLEET_SITE=/etc/nginx/conf.d/nginx-canary-site.conf
SITE_LOG=/var/log/nginx/nginx-canary-site.access.log

changes=0
nginx_changed=0
units_changed=0
code_changed=0
apps_changed=0
daemon_unit_changed=0
daemon_config_changed=0
etcd_changed=0

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

# write_once MODE DEST TEXT: like write_file, only if DEST does not exist (a file the daemon edits).
write_once() {
	if [ -e "$2" ]; then
		return 1
	fi
	write_file "$@"
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

# need NAME VALUE PATTERN WHAT: exit unless the variable NAME's VALUE matches the regex PATTERN.
need() {
	if ! [[ $2 =~ $3 ]]; then
		say "role $ROLE needs $1 set to $4 (got '$2')" >&2
		exit 2
	fi
}

has_role() {
	local role
	for role in "$@"; do
		if [ "$ROLE" = "$role" ]; then
			return 0
		fi
	done
	return 1
}

IPV4='^([0-9]{1,3}[.]){3}[0-9]{1,3}$'
FLEET_ID='^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'
case $ROLE in
demo) ;;
etcd) need ETCD_ADDR "$ETCD_ADDR" "$IPV4" "this VM's private IPv4 address" ;;
app) ;;
nginx)
	need APP_ADDR "$APP_ADDR" "$IPV4" "the app VM's IPv4 address"
	need ETCD_URL "$ETCD_URL" '^https?://[A-Za-z0-9.-]+:[0-9]{1,5}$' "etcd's client URL (http://ADDRESS:PORT)"
	need FLEET_NAME "$FLEET_NAME" "$FLEET_ID" "a fleet name"
	need FLEET_HOST "$FLEET_HOST" "$FLEET_ID" "this host's name in the fleet"
	;;
*)
	say "unknown role '$ROLE': demo, etcd, app or nginx" >&2
	exit 2
	;;
esac
case $ROLE in
demo) APP_ADDR=127.0.0.1 ;;
etcd) PACKAGES=(etcd-server curl) ;;
app)
	APP_ADDR=0.0.0.0
	PACKAGES=(python3-venv gcc python3-dev curl)
	;;
esac

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

# -- etcd (role etcd): Debian's etcd-server, its clients' port on the private network too ----------
if has_role etcd; then
	# Only the client URLs change: the member's name and peer URLs stay the package's (one member).
	if write_file 0644 "$ROOT/etc/default/etcd" "# Written by nginx-canary's vagrant/provision.sh (role etcd).
ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:$ETCD_PORT,http://$ETCD_ADDR:$ETCD_PORT
ETCD_ADVERTISE_CLIENT_URLS=http://$ETCD_ADDR:$ETCD_PORT"; then
		etcd_changed=1
	fi
	enable_unit etcd.service
	restart_or_start etcd.service "$etcd_changed"
fi

# -- nginx-canary in a venv, from the synced folder -----------------------------------
if has_role demo app nginx; then
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
fi

# -- systemd units -----------------------------------------------------------------------
if has_role demo app; then
	if install_file 0644 "$REPO/vagrant/nginx-canary-demo-app@.service" "$ROOT/etc/systemd/system/nginx-canary-demo-app@.service"; then
		units_changed=1
		apps_changed=1
	fi
	for version in v1 v2; do
		port=$V1_PORT
		if [ "$version" = v2 ]; then
			port=$V2_PORT
		fi
		if write_file 0644 "$ROOT/etc/default/nginx-canary-demo-app-$version" "HOST=$APP_ADDR
PORT=$port"; then
			apps_changed=1
		fi
	done
fi
if has_role demo nginx; then
	if install_file 0644 "$REPO/systemd/nginx-canary.service" "$ROOT/etc/systemd/system/nginx-canary.service"; then
		units_changed=1
		daemon_unit_changed=1
	fi
fi
if [ "$units_changed" -ne 0 ]; then
	systemctl daemon-reload
fi

# -- nginx: the canary log format and the site -----------------------------------------------
if has_role demo nginx; then
	if install_file 0644 "$REPO/conf.d/nginx-canary-log-format.conf" "$ROOT/etc/nginx/conf.d/nginx-canary-log-format.conf"; then
		nginx_changed=1
	fi
fi
if has_role demo; then
	if install_once 0644 "$REPO/conf.d/nginx-canary-site.conf" "$ROOT/etc/nginx/conf.d/nginx-canary-site.conf"; then
		nginx_changed=1
	fi
fi
# A fleet host's site: the example site's upstream `backend` with the app VM's servers, written
# once (the daemon edits it; provisioning again must not undo a rollout).
if has_role nginx; then
	if write_once 0644 "$ROOT$FLEET_SITE" "# nginx-canary fleet host $FLEET_HOST: written once by vagrant/provision.sh (role nginx).
# The fleet's daemons steer upstream \`backend\` on every host together; the apps run on $APP_ADDR.
upstream backend {
    server $APP_ADDR:$V1_PORT;          # v1, stable
    server $APP_ADDR:$V2_PORT down;     # v2, the canary: down until a rollout steps it in
    keepalive 32;
}

server {
    listen 8080;
    server_name _;
    access_log $SITE_LOG canary;

    location / {
        proxy_pass http://backend;
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
}"; then
		nginx_changed=1
	fi
fi

# -- the daemon's config -------------------------------------------------------------------
if has_role demo nginx && [ ! -d "$ROOT/etc/nginx-canary" ]; then
	install -d -m 0750 "$ROOT/etc/nginx-canary"
	changes=$((changes + 1))
fi
if has_role demo; then
	if install_file 0640 "$REPO/conf.d/nginx-canary.example.yaml" "$ROOT/etc/nginx-canary/config.yaml"; then
		daemon_config_changed=1
	fi
fi
# A fleet host's YAML: the same rollout on every host, and the `fleet:` section. etcd is reached
# with plain http on the VMs' private network, hence allow_plaintext (vagrant/README.md says why).
if has_role nginx; then
	if write_file 0640 "$ROOT/etc/nginx-canary/config.yaml" "# nginx-canary on fleet host $FLEET_HOST: written by vagrant/provision.sh (role nginx);
# provisioning again puts it back. Reference: docs/CONFIG.md.
nginx:
  conf: /etc/nginx/nginx.conf
state_dir: /var/lib/nginx-canary
control_socket: /run/nginx-canary/control.sock

rollouts:
  app:
    upstream: backend
    canary: [\"$APP_ADDR:$V2_PORT\"]
    access_log: $SITE_LOG
    steps: [10, 25, 50, 100]
    step_interval: 30s
    analysis:
      interval: 1s

fleet:
  etcd: [\"$ETCD_URL\"]
  name: $FLEET_NAME
  host: $FLEET_HOST
  allow_plaintext: true           # http:// on the private network only; https with ca: elsewhere
  on_host_lost: pause"; then
		daemon_config_changed=1
	fi
fi

# -- start everything, in dependency order -------------------------------------------------
if has_role demo app; then
	for version in v1 v2; do
		enable_unit "nginx-canary-demo-app@$version.service"
		restart_or_start "nginx-canary-demo-app@$version.service" $((apps_changed + code_changed))
	done
fi

if has_role demo nginx; then
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
fi

if [ "$changes" -eq 0 ]; then
	say "nothing to change"
else
	case $ROLE in
	demo) say "done: nginx on port 8080 (forwarded to the host), v1 on $V1_PORT, v2 on $V2_PORT, rollout 'app'" ;;
	etcd) say "done: etcd on http://$ETCD_ADDR:$ETCD_PORT" ;;
	app) say "done: v1 on port $V1_PORT, v2 on $V2_PORT (every address of this VM)" ;;
	nginx) say "done: fleet host $FLEET_HOST of fleet '$FLEET_NAME': nginx on port 8080, etcd $ETCD_URL, rollout 'app'" ;;
	esac
fi
