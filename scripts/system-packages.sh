#!/usr/bin/env bash
# Install the Debian packages the test suite runs for real: `prometheus` (prometheus, promtool),
# `prometheus-alertmanager` (prometheus-alertmanager, amtool), with `--browser` `chromium`
# with `chromium-driver` (chromium, chromedriver) for the status page's browser test, and with
# `--bench` `wrk`, the load generator of `make bench` (and of its share in the test suite), and
# with `--etcd` `etcd-server` (etcd), the coordination store of replicas in HA (docs/ha.md).
#
# Idempotent: does nothing when every binary is already on PATH. Works as root without a TTY
# (CI), or through sudo. The tests start their own Prometheus and Alertmanager on free loopback
# ports, so the system services these packages bring are kept from starting during the
# install, and stopped and disabled afterwards if they started anyway.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PACKAGES=(prometheus prometheus-alertmanager)
BINARIES=(promtool prometheus amtool prometheus-alertmanager)
SERVICES=(prometheus prometheus-alertmanager)
# the browser and wrk only for the test suite and benchmarks: `make demo` needs neither
for flag in "$@"; do
  case "$flag" in
    --browser)
      PACKAGES+=(chromium chromium-driver)
      BINARIES+=(chromium chromedriver)
      ;;
    --bench)
      PACKAGES+=(wrk)
      BINARIES+=(wrk)
      ;;
    --etcd)
      PACKAGES+=(etcd-server)
      BINARIES+=(etcd)
      SERVICES+=(etcd)
      ;;
    *)
      echo "system-packages: unknown option $flag (--browser, --bench, --etcd)" >&2
      exit 2
      ;;
  esac
done

missing=()
for bin in "${BINARIES[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "system-packages: ${BINARIES[*]} already installed"
  exit 0
fi
echo "system-packages: missing ${missing[*]}; installing ${PACKAGES[*]}"

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  echo "system-packages: need root (or sudo) to install ${PACKAGES[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-packages: apt-get not found; install ${PACKAGES[*]} (Prometheus 2.42+," \
    "Alertmanager 0.25) with your package manager" >&2
  exit 1
fi

# Keep the packages' services from starting: a policy-rc.d that denies every start, unless the
# machine already has one (then that policy stands).
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod 755 "$policy"
  own_policy=true
fi
cleanup() {
  if [ "$own_policy" = true ]; then
    "${as_root[@]}" rm -f "$policy"
  fi
}
trap cleanup EXIT

"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"

# Stop (and keep stopped) whatever the install started or enabled: these services were not in
# use before, since their binaries were missing.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  for svc in "${SERVICES[@]}"; do
    "${as_root[@]}" systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
  done
elif command -v service >/dev/null 2>&1; then
  for svc in "${SERVICES[@]}"; do
    "${as_root[@]}" service "$svc" stop >/dev/null 2>&1 || true
  done
fi
# Without a service manager the daemons can only have come from the packages' init scripts,
# which run them as the `prometheus` or `etcd` system user: stop those by PID.
for user in prometheus etcd; do
  id "$user" >/dev/null 2>&1 || continue
  for pid in $(pgrep -u "$user" '^(prometheus|etcd)' || true); do
    echo "system-packages: stopping package daemon $pid ($(ps -o comm= -p "$pid" || true))"
    "${as_root[@]}" kill "$pid" || true
  done
done

for bin in "${BINARIES[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || {
    echo "system-packages: $bin still missing after install" >&2
    exit 1
  }
done
echo "system-packages: installed $(promtool --version 2>&1 | head -n1); $(amtool --version 2>&1 | head -n1);" \
  "$(chromium --version 2>/dev/null | head -n1)"
