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

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

# 60 s of mixed load on one server: errors by code, latency, memory growth, a clean stop.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

# The walkthrough through the SDK, on a private server: PNG figures in ./demo.
demo: $(STAMP)
	$(BIN)/centroidal demo --serve --out demo

clean:
	rm -rf $(VENV) build *.egg-info
