# Sightline: `make demo` and `make test` set everything up themselves (idempotent).
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: help install demo test test-unit test-integration bench lock stack-up stack-down clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

install:  ## virtualenv, pinned deps, generated protobuf code, Kafka jars (a second run is quick and offline)
	@bash scripts/install.sh

demo: install  ## bring the local stack up and run the whole story on the embedded defaults
	@echo "[demo] running 'sightline demo' (data in ./var)"
	@.venv/bin/sightline demo

test: install  ## the whole test suite: unit, integration (real Kafka, Feast, gRPC), e2e
	@echo "[test] running pytest (unit, integration, e2e)"
	@$(PY) -m pytest tests

test-unit: install  ## only the unit tests (no services)
	@$(PY) -m pytest tests/unit

test-integration: install  ## only the tests against real services
	@$(PY) -m pytest tests/integration tests/e2e

bench: install  ## every benchmark; refreshes bench/README.md
	@$(PY) -m bench

lock:  ## re-resolve requirements.in into requirements.lock
	@$${HOME}/.cache/sightline/tools/bin/uv pip compile requirements.in -o requirements.lock --python-version 3.11

stack-up: install  ## start the local Kafka broker, create topics, apply the Feast repo
	@.venv/bin/sightline stack up

stack-down:  ## stop the local Kafka broker
	@.venv/bin/sightline stack down

clean:  ## stop the stack and remove local data (./var); the shared virtualenv is kept
	-@.venv/bin/sightline stack down 2>/dev/null
	rm -rf var .venv proto/*_pb2*.py proto/.stamp
