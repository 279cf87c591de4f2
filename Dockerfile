# syntax=docker/dockerfile:1
# Preliminary image (batch mode); health checks and the service setup arrive with the service work.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY batch_processor ./batch_processor
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11.11-slim-bookworm
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 BATCH_BATCH_DIR=/data BATCH_LOG_FORMAT=json
RUN mkdir /data && chown 10001:10001 /data
USER 10001:10001
VOLUME ["/data"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["batch-processor"]
CMD ["run", "--recover"]
