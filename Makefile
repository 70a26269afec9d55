# The two commands of the README. Both set up .venv first (idempotent).
.PHONY: demo test lint setup

demo:
	./scripts/setup.sh sam
	.venv/bin/terramask predict examples/atlanta_pan_uint16.tif --prompts examples/atlanta_prompts.geojson --out out/demo
	@echo "Outputs in out/demo: mask.tif candidates.tif mask.gpkg mask.geojson overlay.png result.json"

# Static checks first (ruff, mypy; configured in pyproject.toml), then the suite: any failure fails CI.
test: lint
	.venv/bin/python -m pytest -q

lint:
	./scripts/setup.sh test
	.venv/bin/ruff check src tests
	.venv/bin/mypy src

setup:
	./scripts/setup.sh test
