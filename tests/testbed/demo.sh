#!/bin/bash
# demo.sh — credloader's main job, end to end, on a real systemd.
#
#   demo.sh PATH/TO/credloader
#
# Boots the test bed (a throwaway systemd as PID 1 over a copy-on-write root,
# see docs/testbed.md), seals demo exchange keys, lets credloader deliver them
# to quantum-position-monitor.service and quantum-order-router.service, rotates
# one key, and shows that only its consumer restarted. Nothing on the host
# changes; the bed and the throwaway credential secret are removed at the end.
set -euo pipefail

BIN=$(readlink -f "${1:?usage: demo.sh PATH/TO/credloader}")
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
REPO=$(dirname "$(dirname "$HERE")")
TESTBED="$HERE/testbed.sh"
WORK=$(mktemp -d /tmp/credloader-testbed.demo.XXXXXX)
STATE="$WORK/bed"

# Bold headings for a person at a terminal only: never escape codes in a
# log, a pipe or CI (nor with NO_COLOR set).
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
  step() { printf '\n==> %s\n' "$*"; }
fi
say() { printf '    %s\n' "$*"; }
inside() { "$TESTBED" exec "$STATE" "$@"; }
cleanup() {
  "$TESTBED" stop "$STATE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Show a unit's credential variables as PID 1 handed them over: masked.
show_env() {
  local unit=$1 pid
  pid=$(inside systemctl show -p MainPID --value "$unit")
  say "$unit (MainPID $pid) environment:"
  inside cat "/proc/$pid/environ" | tr '\0' '\n' |
    grep -E '^(BINANCE|KRAKEN|EXCHANGE|EXIT_BRAIN)' |
    awk -F= '{ v = substr($0, length($1) + 2);
               r = int(length(v) / 8); if (r > 3) r = 3;   # as credloader masks
               m = substr(v, 1, r) "...***";
               if ($1 ~ /^EXIT_BRAIN/) m = v;
               printf "      %-24s %-12s (%d bytes)\n", $1, m, length(v) }'
}

# Seal a value with `credloader seal`: it reaches systemd-creds over a pipe,
# never argv or a temp file. (`printf %s`: no trailing newline in the value.)
seal() {
  local name=$1 value=$2
  printf '%s' "$value" | inside credloader seal "$name" --key host | sed 's/^/    /'
}

step "Booting a throwaway systemd (PID 1 in its own namespaces, copy-on-write root)"
SYSTEMD_CREDENTIAL_SECRET="$WORK/credential.secret" systemd-creds setup >/dev/null 2>&1
started=$(date +%s%N)
TESTBED_CREDENTIAL_SECRET="$WORK/credential.secret" "$TESTBED" start "$STATE" >/dev/null
say "systemd $(inside systemctl --version | head -1 | cut -d' ' -f2) is running ($(( ($(date +%s%N) - started) / 1000000 )) ms)"

step "Installing credloader, its units, and two trading services running as user qt"
ROOT=$("$TESTBED" root "$STATE")
install -m 0755 "$BIN" "$ROOT/usr/bin/credloader"
install -m 0644 "$REPO"/units/* "$ROOT/etc/systemd/system/"
inside useradd --system --no-create-home --shell /usr/sbin/nologin qt
for svc in quantum-position-monitor quantum-order-router; do
  printf '[Unit]\nDescription=%s (demo)\n[Service]\nUser=qt\nExecStart=/bin/sleep infinity\n' "$svc" \
    > "$ROOT/etc/systemd/system/$svc.service"
done
inside install -d -m 0700 /etc/quantum/creds
inside install -d -m 0755 /etc/quantum/credloader.d
cat > "$ROOT/etc/quantum/credloader.toml" <<'EOF'
# Services are configured in credloader.d/, one file each.
EOF
cat > "$ROOT/etc/quantum/credloader.d/position-monitor.toml" <<'EOF'
[services.position-monitor]
unit = "quantum-position-monitor.service"
user = "qt"
credentials = ["BINANCE_API_KEY", "BINANCE_API_SECRET"]
static = { EXIT_BRAIN_V35_ENABLED = "true" }
EOF
cat > "$ROOT/etc/quantum/credloader.d/order-router.toml" <<'EOF'
[services.order-router]
unit = "quantum-order-router.service"
user = "qt"
credentials = ["KRAKEN_API_KEY"]
EOF
inside systemctl daemon-reload
say "config: /etc/quantum/credloader.d/{position-monitor,order-router}.toml"

step "Sealing demo keys with credloader seal into /etc/quantum/creds (root, 0600)"
# Masked values show their first three characters: the old and the new key
# differ there, so the rotation is visible without showing a key.
seal BINANCE_API_KEY "OLDbinancekey0123456789abcdef"
seal BINANCE_API_SECRET "SECbinancesecretfedcba9876543210"
seal KRAKEN_API_KEY "KRAkrakenkey00112233445566778899"
inside ls -l /etc/quantum/creds | sed 's/^/    /'

step "credloader apply: env files, drop-ins, one daemon-reload"
inside credloader apply | sed 's/^/    /'
inside stat -c '    %n  owner %U  mode %a' /run/credloader/position-monitor.env /run/credloader/order-router.env
say "drop-in for quantum-position-monitor.service:"
inside cat /etc/systemd/system/quantum-position-monitor.service.d/50-credloader.conf | sed 's/^/      /'

step "Boot: credloader.service runs first, then both services start with their keys"
inside systemctl enable --quiet credloader.service credloader.path quantum-position-monitor.service
inside systemctl start credloader.path quantum-position-monitor.service quantum-order-router.service
show_env quantum-position-monitor.service
show_env quantum-order-router.service

step "Rotating BINANCE_API_KEY with credloader rotate: keeps the old generation, restarts and verifies its consumer"
before_pm=$(inside systemctl show -p MainPID --value quantum-position-monitor.service)
before_or=$(inside systemctl show -p MainPID --value quantum-order-router.service)
printf '%s' "NEWbinancekey9876543210fedcba" | inside credloader rotate BINANCE_API_KEY --key host | sed 's/^/    /'
now_pm=$(inside systemctl show -p MainPID --value quantum-position-monitor.service)
now_or=$(inside systemctl show -p MainPID --value quantum-order-router.service)
say "quantum-position-monitor.service: MainPID $before_pm -> $now_pm (restarted: it uses the key)"
say "quantum-order-router.service:     MainPID $before_or -> $now_or ($([ "$now_or" = "$before_or" ] && echo 'untouched' || echo 'RESTARTED?!'))"
show_env quantum-position-monitor.service
say "credloader generations BINANCE_API_KEY (the old value kept, the new one current):"
inside credloader generations BINANCE_API_KEY | sed 's/^/      /'
say "credloader status:"
inside credloader status | sed 's/^/      /'

step "Tearing down: the bed powers off, the host is as it was"
"$TESTBED" stop "$STATE" >/dev/null
if [ "$now_pm" != "$before_pm" ] && [ "$now_or" = "$before_or" ]; then
  say "done: two services got their keys from sealed credentials (env files 0600, owned by"
  say "qt, on tmpfs), and a rotation restarted and verified only the service that uses the key."
else
  say "FAILED: the rotation did not restart exactly the consumer of the key (see above)."
  exit 1
fi
