# The two commands a newcomer needs: `make dev` and `make test`.
.PHONY: dev test setup lint bench clean

dev:
	@bash scripts/dev.sh

test:
	@bash scripts/test.sh

setup:
	@bash scripts/setup.sh

lint: setup
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/mypy

bench: setup
	.venv/bin/python benchmarks/scheduler.py

clean:
	rm -rf .venv .podium .pytest_cache .mypy_cache .ruff_cache
