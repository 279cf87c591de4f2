# syntax=docker/dockerfile:1
# batch_processor as a container: continuous mode, health check on /healthz, metrics on :9464.
#   docker build -t batch-processor .
#   docker run -v bp-data:/data -e BATCH_PROCESSOR_MONGODB_URI=mongodb://db:27017 batch-processor

# --- build: a virtual environment with the package and its dependencies -------------------
FROM python:3.12.8-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/runtime.lock ./requirements/
# Exact, hashed versions: two builds a week apart install the same bytes.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md LICENSE ./
COPY batch_processor ./batch_processor
RUN /opt/venv/bin/pip install --no-deps .

# --- runtime: the same slim base, the venv only, no build tools, a numeric non-root user ---
FROM python:3.12.8-slim-bookworm
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BATCH_PROCESSOR_BATCH_DIR=/data \
    BATCH_PROCESSOR_LOG_FORMAT=json \
    BATCH_PROCESSOR_PROGRESS=false \
    BATCH_PROCESSOR_HTTP=true \
    BATCH_PROCESSOR_HTTP_HOST=0.0.0.0 \
    BATCH_PROCESSOR_HTTP_PORT=9464
RUN mkdir /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["batch-processor"]
CMD ["run", "--mode", "continuous", "--recover"]
