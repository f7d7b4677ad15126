# The two entry points of the README. Both set the machine up first (idempotent).
.PHONY: setup demo lint test test-deps dags-test bench clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/microturn demo --output demo-out

# The lint and type gate (ruff, then pyright: about 2 min on 2 cores) runs before the ~18 min of
# tests, so that a type or lint fault fails CI before the long part starts.
lint: setup
	bash scripts/lint.sh

# chromium (renders the audit report in a test) and .venv-interop (Hugging Face datasets and the
# previous DuckDB release, which load the shards and open the catalog in tests): about 2 min once.
test-deps: setup
	bash scripts/test_deps.sh

test: lint test-deps
	.venv/bin/python -m pytest -q -p no:cacheprovider tests
	$(MAKE) dags-test

# Both Airflow DAGs of dags/ end to end with dag.test() on the demo call, in their own Airflow
# environment (.venv-airflow, installed on first use): about 3 min with the install.
dags-test: setup
	bash scripts/dags_test.sh

bench: setup
	.venv/bin/python bench/ingest.py
	.venv/bin/python bench/synth.py
	.venv/bin/python bench/shard.py
	.venv/bin/python bench/scale.py
	.venv/bin/python bench/train.py
	.venv/bin/python bench/moe_kernel.py
	.venv/bin/python bench/session.py

clean:
	rm -rf demo-out .pytest_cache build/typecheck
