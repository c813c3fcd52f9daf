#!/usr/bin/env bash
# Build the responder's Docker image from the Dockerfile with podman, run it the way
# docs/deployment.md says, check it from outside, and remove it again. Run as root:
#
#   make image-test          (or: sudo bash scripts/image-test.sh)
#
# No container registry is needed. The base image named in the Dockerfile's FROM is replaced by
# a local stand-in made with debootstrap from the Debian mirror in apt's sources (Python 3, pip,
# venv, CA certificates), kept in $RESPONDER_IMAGE_CACHE (default /var/cache/responder-image-test)
# and in podman's storage, so only the first run pays for it. pip inside the build still needs
# PyPI (through the host's CA bundle, mounted into the build when the host has one).
#
# Checks: /healthz answers 200; /webhook answers 200 with the bearer token and 401 without; the
# server runs as a non-root uid; the image keeps its HEALTHCHECK (built with --format docker:
# podman's default OCI format drops it) and the check passes; `podman stop` ends it within 10 s.
# The container, its volume and the built image are removed on exit, whatever happened.
#
# Environment: RESPONDER_IMAGE_CACHE (cache directory), RESPONDER_IMAGE_SUITE (Debian suite of
# the stand-in; default the host's), RESPONDER_IMAGE_RUNTIME (OCI runtime; default runc on hosts
# with cgroup v1 or hybrid cgroups, where crun refuses to run, else podman's default).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
START=$(date +%s)

say() { printf 'image-test: %s\n' "$*"; }
die() {
    printf 'image-test: FAIL: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (rootful podman and debootstrap): sudo make image-test"

CACHE=${RESPONDER_IMAGE_CACHE:-/var/cache/responder-image-test}
RUN_ID="$$-$(date +%s)"
IMAGE="localhost/responder-image-test:$RUN_ID"
CONTAINER="responder-image-test-$RUN_ID"
VOLUME="responder-image-test-$RUN_ID"
WORK=$(mktemp -d /tmp/responder-image-test.XXXXXX)

cleanup() {
    local rc=$?
    if [ "$rc" != 0 ] && podman container exists "$CONTAINER" 2>/dev/null; then
        say "container log (last 40 lines):"
        podman logs --tail 40 "$CONTAINER" 2>&1 | sed 's/^/  | /' || true
    fi
    podman rm --force --time 0 "$CONTAINER" >/dev/null 2>&1 || true
    podman volume rm --force "$VOLUME" >/dev/null 2>&1 || true
    podman rmi --force "$IMAGE" >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'printf "image-test: FAIL: line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

# ---- tools: debootstrap, podman (with buildah's engine), runc; installed only when missing --
missing=()
for tool in debootstrap podman buildah runc; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi

# ---- podman settings of our own, not the host's: runtime, cgroup manager, ulimits ----------
# crun refuses hosts with hybrid cgroups (cgroup v1 controllers plus the unified hierarchy);
# runc runs there. Without systemd as init, cgroups are managed by podman itself (cgroupfs).
# Rootful podman gives containers nofile/nproc limits of 1048576, and runc fails to start any
# container ("error setting rlimit type 7/6: operation not permitted") where that exceeds the
# hard limits it runs under: the host's, and for nproc at most 32768 (podman 4 lowers its own to
# that). Ask for no more than those.
runtime=${RESPONDER_IMAGE_RUNTIME:-}
if [ -z "$runtime" ] && [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
    runtime=runc
fi
cgroup_manager=cgroupfs
[ -d /run/systemd/system ] && cgroup_manager=systemd
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
{ [ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ]; } && nofile=1048576
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
export CONTAINERS_CONF="$WORK/containers.conf"
{
    echo '[containers]'
    echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
    echo '[engine]'
    echo "cgroup_manager = \"$cgroup_manager\""
    echo 'events_logger = "file"'
    [ -n "$runtime" ] && echo "runtime = \"$runtime\""
} >"$CONTAINERS_CONF"
say "podman $(podman version --format '{{.Client.Version}}'), runtime ${runtime:-default}, cgroups $cgroup_manager, nofile $nofile, nproc $nproc"

# ---- the stand-in base image ------------------------------------------------------------------
mapfile -t bases < <(awk 'toupper($1) == "FROM" { print $2 }' Dockerfile | sort -u |
    grep -v -x -F -f <(awk 'toupper($1) == "FROM" && toupper($3) == "AS" { print $4 }' Dockerfile) || true)
[ "${#bases[@]}" = 1 ] || die "expected one base image in the Dockerfile's FROM lines, found: ${bases[*]:-none}"
BASE=${bases[0]}
case "$BASE" in */*) BASE_REF=$BASE ;; *) BASE_REF="localhost/$BASE" ;; esac

# The first deb mirror of apt's sources (deb822 .sources or one-line .list), and the suite.
mirror=$(
    {
        cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$1 == "URIs:" { print $2 }'
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }'
    } | grep -v -- '-security' | head -n 1
) || true
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*"
# shellcheck disable=SC1091
suite=${RESPONDER_IMAGE_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
[ -n "$suite" ] || die "no Debian suite: set RESPONDER_IMAGE_SUITE"
packages=python3,python3-pip,python3-venv,python-is-python3,ca-certificates
key=$(printf '%s\n' "$BASE" "$mirror" "$suite" "$packages" 1 | sha256sum | cut -c1-16)
tarball="$CACHE/base-$suite-$key.tar"

if [ "$(podman image inspect --format '{{index .Labels "responder.image-test.key"}}' "$BASE_REF" 2>/dev/null)" = "$key" ]; then
    say "base $BASE_REF: cached in podman's storage"
else
    if [ ! -s "$tarball" ]; then
        say "base: debootstrap $suite from $mirror (first run only, about a minute)"
        mkdir -p "$CACHE"
        rootfs="$CACHE/rootfs.$$"
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
            >"$WORK/debootstrap.log" 2>&1 || {
            tail -n 20 "$WORK/debootstrap.log" >&2
            rm -rf "$rootfs"
            die "debootstrap failed"
        }
        # Like the official python images: pip may install into the system interpreter (no
        # PEP 668 marker), no apt lists or downloaded packages in the image.
        rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
        tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
    fi
    say "base: importing $tarball as $BASE_REF"
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL responder.image-test.key=$key" \
        "$tarball" "$BASE_REF" >/dev/null
fi

# ---- build the real Dockerfile -------------------------------------------------------------------
# --layers=false: no intermediate images are left behind; only the base image is cached.
build_args=(--format docker --pull=never --layers=false --tag "$IMAGE")
# Hosts whose outbound TLS is re-signed by a local CA: pip in the build trusts what the host
# trusts (the stand-in's pip reads the system bundle), instead of turning verification off.
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    build_args+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
say "building $IMAGE"
t0=$(date +%s)
podman build "${build_args[@]}" . >"$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log" >&2
    die "podman build failed"
}
say "built in $(($(date +%s) - t0)) s"

healthcheck=$(podman image inspect --format '{{json .HealthCheck}}' "$IMAGE")
case "$healthcheck" in
*healthz*) say "ok: the image has its HEALTHCHECK" ;;
*) die "the image has no HEALTHCHECK (got: $healthcheck)" ;;
esac

# Every pin of constraints.txt is what the image has installed.
podman run --rm --entrypoint pip "$IMAGE" list --format freeze >"$WORK/installed.txt" 2>/dev/null
python3 - constraints.txt "$WORK/installed.txt" <<'PY' || die "the image does not have the versions of constraints.txt"
import re, sys
norm = lambda line: re.sub(r"[-_.]+", "-", line.strip().lower())
pins = {norm(l) for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")}
missing = sorted(pins - {norm(l) for l in open(sys.argv[2])})
print("\n".join("  not installed: " + m for m in missing), file=sys.stderr)
sys.exit(1 if missing else 0)
PY
say "ok: the image has the $(grep -c '==' constraints.txt) pinned versions of constraints.txt"

# ---- run it as docs/deployment.md says -----------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
etc="$WORK/etc"
mkdir -p "$etc/secrets"
for name in webhook-token operator-token node-token; do
    python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$etc/secrets/$name"
done
cat >"$etc/config.yml" <<'EOF'
listen: 0.0.0.0:9095
dry_run: true
state_dir: /var/lib/responder
auth:
  webhook_token_file: secrets/webhook-token
  operator_token_file: secrets/operator-token
pairs:
  - name: mainnet-a
    nodes:
      - name: node-a
        match: {node: node-a}
        driver: {type: http, url: "http://192.0.2.1:18001", token_file: secrets/node-token}
      - name: node-b
        match: {node: node-b}
        driver: {type: http, url: "http://192.0.2.2:18002", token_file: secrets/node-token}
    policy:
      triggers: [ValidatorClientDown]
      hold: 20s
EOF
# The files belong to the image's user (10001) and only it reads them.
chown -R 10001:10001 "$etc"
chmod 700 "$etc/secrets"
chmod 600 "$etc"/secrets/* "$etc/config.yml"

say "starting $CONTAINER on 127.0.0.1:$port"
podman volume create "$VOLUME" >/dev/null
# (without systemd, podman complains that it cannot set up the HEALTHCHECK's timer: its log)
podman run -d --name "$CONTAINER" --read-only \
    -p "127.0.0.1:$port:9095" \
    -v "$etc/config.yml:/etc/responder/config.yml:ro" \
    -v "$etc/secrets:/etc/responder/secrets:ro" \
    -v "$VOLUME:/var/lib/responder" \
    "$IMAGE" >/dev/null 2>"$WORK/run.log" || {
    cat "$WORK/run.log" >&2
    die "podman run failed"
}

url="http://127.0.0.1:$port"
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }
for _ in $(seq 1 150); do # up to 30 s for gunicorn and its workers to start
    [ "$(status "$url/healthz")" = 200 ] && break
    [ "$(podman inspect --format '{{.State.Running}}' "$CONTAINER")" = true ] || die "the container exited"
    sleep 0.2
done
[ "$(status "$url/healthz")" = 200 ] || die "/healthz did not answer 200 within 30 s"
say "ok: /healthz 200"

payload="$WORK/payload.json"
python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))["body"], open(sys.argv[2], "w"))' \
    "$ROOT/tests/fixtures/alertmanager-0.25/firing-single-bearer.json" "$payload"
token=$(cat "$etc/secrets/webhook-token")
got=$(status -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $token" \
    --data-binary "@$payload" "$url/webhook")
[ "$got" = 200 ] || die "webhook with the token answered $got, not 200"
say "ok: webhook with the token 200"
got=$(status -X POST -H 'Content-Type: application/json' --data-binary "@$payload" "$url/webhook")
[ "$got" = 401 ] || die "webhook without a token answered $got, not 401"
say "ok: webhook without a token 401"

uid=$(podman exec "$CONTAINER" id -u)
[ "$uid" != 0 ] || die "the server runs as root"
server_uid=$(podman top "$CONTAINER" huser | awk 'NR > 1 { print $1 }' | sort -u | tr '\n' ' ')
say "ok: uid $uid (processes: $server_uid)"
case " $server_uid " in *" root "* | *" 0 "*) die "a process in the container runs as root" ;; esac

podman healthcheck run "$CONTAINER" >/dev/null || die "the HEALTHCHECK command failed"
say "ok: HEALTHCHECK passes"

t0=$(date +%s.%N)
podman stop --time 10 "$CONTAINER" >/dev/null 2>>"$WORK/run.log"
stopped=$(python3 -c "import sys; print(round($(date +%s.%N) - $t0, 1))")
code=$(podman inspect --format '{{.State.ExitCode}}' "$CONTAINER")
python3 -c "import sys; sys.exit(0 if $stopped < 10 else 1)" ||
    die "podman stop took ${stopped} s (SIGTERM not handled in time; SIGKILL came)"
[ "$code" = 0 ] || die "the container exited with $code after SIGTERM"
say "ok: stopped in ${stopped} s, exit code 0"

say "passed in $(($(date +%s) - START)) s"
