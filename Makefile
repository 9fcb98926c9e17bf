# The two commands a new user needs are `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_SRC := protos/centroidal/v1/clustering.proto

.PHONY: install serve test test-slow proto proto-check bench soak demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[server,dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/centroidal serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
		--python_out=protos --pyi_out=protos --grpc_python_out=protos $(PROTO_SRC)

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[server,dev,bench]'
	touch $(BENCH_STAMP)

# h2load (Debian's nghttp2-client) drives the CPU-per-call rows: installed when missing and
# this user may, else those rows say they were skipped.
bench: $(BENCH_STAMP)
	@command -v h2load >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nghttp2-client; } || \
		echo "h2load (nghttp2-client) is missing: the CPU-per-call rows will be skipped"
	$(BIN)/python -m bench

# 60 s of mixed load on one server: errors by code, latency, memory growth, a clean stop.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

# The walkthrough through the SDK, on a private server: PNG figures in ./demo.
demo: $(STAMP)
	$(BIN)/centroidal demo --serve --out demo

clean:
	rm -rf $(VENV) build *.egg-info
