# centroidal server image: slim Python, the OpenMP runtime for numba's thread-safe layer,
# a non-root user, and a health check through the SDK's CLI.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 centroidal \
    && mkdir -p /data /cache/numba \
    && chown -R centroidal:centroidal /data /cache

WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY engine ./engine
COPY server ./server
COPY client ./client
RUN pip install --no-cache-dir '.[server]'

USER centroidal
ENV CENTROIDAL_HOST=0.0.0.0 \
    CENTROIDAL_PORT=50051 \
    CENTROIDAL_DATA_DIR=/data \
    NUMBA_CACHE_DIR=/cache/numba \
    NUMBA_THREADING_LAYER=omp \
    PYTHONUNBUFFERED=1

# Compile the kernels into the image's cache so containers start in about a second.
RUN python -c "from centroidal.engine import kmeans; print(kmeans.warmup())"

VOLUME ["/data"]
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD centroidal health --target 127.0.0.1:50051 --timeout 4 || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["centroidal"]
CMD ["serve"]
