# centroidal server image: slim Python, a non-root user, every kernel compiled at build
# time, and a health check that follows CENTROIDAL_PORT.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 centroidal \
    && mkdir -p /data /cache/numba \
    && chown -R 10001:10001 /data /cache

WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY codec ./codec
COPY engine ./engine
COPY server ./server
COPY client ./client
COPY sources ./sources
COPY partitioned ./partitioned
# This repository's own package; its dependencies are pinned to tested ranges in pyproject.toml.
# The postgres extra (psycopg, with its own libpq) lets replicas share a PostgreSQL store;
# the dask extra (pyarrow, fsspec, dask, distributed) fits datasets by reference.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[server,postgres,dask]'

USER 10001:10001
ENV CENTROIDAL_HOST=0.0.0.0 \
    CENTROIDAL_PORT=50051 \
    CENTROIDAL_DATA_DIR=/data \
    NUMBA_CACHE_DIR=/cache/numba \
    PYTHONUNBUFFERED=1

# Compile every kernel the server runs (the same list a server's warm-up compiles) into the
# image's cache, so a container is SERVING in about a second and its first calls wait for none.
RUN python -m centroidal.engine.warmup

VOLUME ["/data"]
EXPOSE 50051
# CENTROIDAL_HEALTH_ARGS adds options the check needs, e.g. "--tls-ca /certs/ca.pem" with TLS.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "centroidal health --target 127.0.0.1:${CENTROIDAL_PORT} --timeout 4 ${CENTROIDAL_HEALTH_ARGS:-}"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["centroidal"]
CMD ["serve"]
