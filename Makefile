# Shortcuts for the README's commands (which are plain scripts, so a machine without make runs them too).
.PHONY: run test bench format
run:
	scripts/serve $(ARGS)
test:
	scripts/test $(ARGS)
bench:
	.venv/bin/python benchmarks/run.py $(ARGS)
format:
	.venv/bin/ruff format src tests benchmarks && .venv/bin/ruff check --fix src tests benchmarks
