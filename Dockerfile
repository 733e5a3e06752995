# syntax=docker/dockerfile:1
# stream: the worker and the HTTP API in one image.
#   docker build -t stream .
#   docker run --rm -v "$PWD/stream.yaml:/etc/stream/stream.yaml:ro" stream              # a worker
#   docker run --rm -p 8080:8080 stream api -c /etc/stream/stream.yaml --port 8080      # the HTTP API
# The build stage turns requirements.lock and the project into wheels; the final stage installs only
# those wheels (no compiler, no build tools, no dev/test extras).

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY stream ./stream
# Every runtime dependency pinned by the lock; extras (dev, test) are not requested, so not built.
RUN pip wheel --constraint requirements.lock --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN groupadd --system --gid 10001 stream \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/stream --no-create-home \
       --shell /usr/sbin/nologin stream \
    && mkdir -p /var/lib/stream /etc/stream \
    && chown 10001:10001 /var/lib/stream
# --no-index: nothing but the wheels of the build stage can be installed.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/stream-*.whl
# A default configuration (a broker on 127.0.0.1); Kubernetes mounts its ConfigMap over /etc/stream.
COPY examples/stream.yaml /etc/stream/stream.yaml
USER 10001:10001
WORKDIR /var/lib/stream
VOLUME /var/lib/stream
# 9108: the worker's /metrics, /healthz, /readyz, /exports/status; 8080: `stream api`.
EXPOSE 9108 8080
# Liveness of a worker; `stream api` containers set STREAM_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = os.environ.get('STREAM_HEALTHCHECK_URL', 'http://127.0.0.1:9108/healthz'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]
ENTRYPOINT ["stream"]
CMD ["worker", "-c", "/etc/stream/stream.yaml"]
