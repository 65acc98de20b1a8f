# The whole setup: `make demo` (main job on the embedded defaults) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed

.PHONY: venv bytecode demo test test-faults lint typecheck bench bench-tuning bench-k8s bench-cli bench-agent bench-mcp eval lock clean hyperparameters

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode --require-hashes -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: venv
	$(BIN)/expagent run --yes "Train a lightgbm baseline on breast_cancer version 1 optimizing roc_auc, then tune 10 trials, experiment demo"

lint: venv
	$(BIN)/ruff check agent tools evals tests benchmarks
	$(BIN)/ruff format --check agent tools evals tests benchmarks
	$(BIN)/lint-imports --no-cache

typecheck: venv
	$(BIN)/mypy

# Bytecode for the checkout's own modules, written once: with PYTHONDONTWRITEBYTECODE set (as on CI machines)
# every process the tests start would otherwise compile them again (~0.45 s each that imports them all).
bytecode: venv
	$(BIN)/python -m compileall -q agent tools evals

# Two workers, a file at a time (a module's one real mlflow server is shared by its tests), in the order
# tests/conftest.py gives (slowest first): 22:51 serial -> 14:30 on 2 cores (measured, with new SQLite
# stores copied from a migrated template); the workers overlap one test's waits with another's CPU.
test: venv lint typecheck bytecode
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder

test-faults: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -m server_faults tests/test_faults_server.py

eval: venv bytecode
	$(BIN)/expagent eval evals/scenarios --report out/eval

bench-cli: venv
	$(BIN)/python benchmarks/bench_cli.py

bench-tuning: venv
	$(BIN)/python benchmarks/bench_tuning.py --repeat 3

bench-k8s: venv
	$(BIN)/python benchmarks/bench_k8s.py

bench-agent: venv
	$(BIN)/python benchmarks/bench_agent.py

bench-mcp: venv
	$(BIN)/python benchmarks/bench_mcp.py

bench: bench-cli bench-agent bench-mcp bench-tuning bench-k8s

# Regenerate the guard's hyperparameter allowlist from the pinned libraries (a test checks it is current).
hyperparameters: venv
	$(BIN)/python -m tools.training.hyperparameters

# Re-pin after editing pyproject.toml dependencies (no index URLs are written into the lock).
lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements.lock -q

clean:
	rm -rf $(VENV) .expagent out
