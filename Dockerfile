# syntax=docker/dockerfile:1
#
# The responder image: gunicorn serving responder.wsgi as an unprivileged user.
#
#   docker build -t responder .
#
# At run time it expects:
#   /etc/responder/config.yml  the config, mounted read-only together with the token files
#                              (relative paths in it resolve against /etc/responder);
#                              its state_dir must be /var/lib/responder
#   /var/lib/responder         a volume for the SQLite state (and the metrics scratch files)
# See docs/operations.md for a complete `docker run` line.

# ---- builder: one wheel for the project plus wheels of all its dependencies ----------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY responder ./responder
# constraints.txt pins every runtime dependency (and theirs) to the versions the tests ran with.
RUN pip wheel --wheel-dir /wheels --constraint constraints.txt .

# ---- final image ---------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    RESPONDER_CONFIG=/etc/responder/config.yml \
    RESPONDER_BIND=0.0.0.0:9095 \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/responder/metrics

# A fixed numeric UID/GID so that mounted token files and state volumes can be owned by it.
RUN groupadd --system --gid 10001 responder \
    && useradd --system --uid 10001 --gid responder --create-home --home-dir /home/responder \
        --shell /usr/sbin/nologin responder \
    && install -d -o responder -g responder -m 0750 /var/lib/responder /var/lib/responder/metrics \
    && install -d -m 0755 /etc/responder

# Install from the builder's wheels only (no index), without copying them into a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/responder-*.whl

USER 10001:10001
WORKDIR /var/lib/responder
VOLUME ["/var/lib/responder"]
EXPOSE 9095

# No curl in slim images: probe /healthz with the Python standard library on the bound port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('RESPONDER_BIND') or '0.0.0.0:9095'; urllib.request.urlopen('http://127.0.0.1:' + port.rpartition(':')[2] + '/healthz', timeout=4)"]

# Before gunicorn starts, empty the prometheus_client multiprocess directory: files left by
# the workers of a previous run would otherwise be added to this run's counters. Any other
# command (e.g. `responder check-config /etc/responder/config.yml`) runs unchanged.
ENTRYPOINT ["/bin/sh", "-c", "set -e; if [ \"$1\" = gunicorn ] && [ -n \"$PROMETHEUS_MULTIPROC_DIR\" ]; then mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\"; find \"$PROMETHEUS_MULTIPROC_DIR\" -mindepth 1 -delete; fi; exec \"$@\"", "responder-entrypoint"]

# --worker-tmp-dir /dev/shm: gunicorn's worker heartbeat files stay off the (possibly
# read-only) image filesystem; everything else comes from responder.gunicorn_conf.
CMD ["gunicorn", "-c", "python:responder.gunicorn_conf", "--worker-tmp-dir", "/dev/shm", "responder.wsgi:app_from_env()"]
