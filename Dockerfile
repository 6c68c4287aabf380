# syntax=docker/dockerfile:1
# The worker image: `worker run worker.examples.fleet` by default; `worker platform`, `worker check`
# and the other commands with another CMD. Build from the repository root:
#   docker build -t worker:dev .
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---- build: dependencies first (cached until pyproject.toml changes), then the package ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependency layer: only pyproject.toml is copied, so editing the source reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && python -c "import uvloop, aiomqtt, prometheus_client"

# Source layer: the package itself, without dependencies (they are already installed).
COPY README.md ./
COPY worker/ worker/
RUN pip install --no-deps . \
 && python -m compileall -q /opt/venv

# ---- runtime: the virtual environment and nothing else ----
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
# An image of your own adds its handlers module here, e.g.
#   COPY handlers/ /app/handlers/   and   CMD ["run", "handlers.mymod"]
# Bytecode is compiled at build time, so a read-only root filesystem needs no writes.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# /metrics, /livez and /readyz (WORKER_METRICS_PORT, default 9100).
EXPOSE 9100
# SIGTERM: /readyz turns 503, unsubscribe, drain within WORKER_DRAIN_TIMEOUT, disconnect, exit 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % (os.environ.get('WORKER_METRICS_PORT') or '9100'), timeout=2)"]
ENTRYPOINT ["worker"]
CMD ["run", "worker.examples.fleet"]
