# Every target sets up what it needs; see README.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= examples/responder.yml

.PHONY: venv system-packages test-packages bench-packages test demo serve lint bench chaos clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

venv: $(STAMP)

# Prometheus, promtool, Alertmanager and amtool from Debian, installed only when missing
# (test-packages adds Chromium and ChromeDriver for the status page's browser test, wrk, and
# etcd for the replicas in HA).
system-packages:
	bash scripts/system-packages.sh

test-packages:
	bash scripts/system-packages.sh --browser --bench --etcd

bench-packages:
	bash scripts/system-packages.sh --bench

test: $(STAMP) test-packages
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check responder tests bench
	$(VENV)/bin/ruff format --check responder tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

DEMO_SECRETS := examples/secrets/webhook-token examples/secrets/operator-token examples/secrets/node-token

examples/secrets/%-token:
	umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))' > $@

# The whole loop once: simulated nodes, Prometheus, Alertmanager, the responder; then stop.
# CHAIN=ethereum (default), solana or cosmos (these two through responder-agent).
CHAIN ?= ethereum
demo: $(STAMP) system-packages
	$(PY) -m responder.demo --chain $(CHAIN)

# The responder alone on the example config (token files created when missing).
serve: $(STAMP) $(DEMO_SECRETS)
	$(VENV)/bin/responder check-config $(CONFIG)
	$(VENV)/bin/responder serve --config $(CONFIG)

# Every figure of docs/benchmarks.md beside its goal, baselines interleaved in the same run
# (about 12 minutes on 2 cores); writes bench/results.json.
bench: $(STAMP) bench-packages system-packages
	$(PY) bench/run.py --json bench/results.json

# The seeded chaos campaign (docs/safety.md): 1,000 randomized scenarios, in-process and against
# gunicorn, then 300 with replicas on etcd and leader kills; exits non-zero on any invariant
# violation. `make chaos SEED=7` runs another campaign.
SEED ?= 20261126
chaos: $(STAMP) system-packages
	bash scripts/system-packages.sh --etcd
	$(PY) -m tests.chaos --scenarios 1000 --seed $(SEED)
	$(PY) -m tests.chaos --etcd --scenarios 300 --seed $(SEED)
	RESPONDER_FUZZ_EXAMPLES=10000 RESPONDER_FUZZ_SEED=$(SEED) $(PY) -m pytest -q -p no:cacheprovider tests/test_webhook_fuzz.py

# Build the Docker image with podman and run it as docs/deployment.md says: /healthz, the webhook
# with and without its token, a non-root uid, the HEALTHCHECK, a clean stop. Root only; no
# registry needed (the base image is a debootstrap stand-in, cached in /var/cache).
.PHONY: image-test
image-test:
	bash scripts/image-test.sh

clean:
	rm -rf $(VENV) var examples/var .pytest_cache .mypy_cache .ruff_cache
