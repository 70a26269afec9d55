# The two commands of the README. Both set up .venv first (idempotent).
.PHONY: demo test setup

demo:
	./scripts/setup.sh sam
	.venv/bin/terramask predict examples/atlanta_pan_uint16.tif --prompts examples/atlanta_prompts.geojson --out out/demo
	@echo "Outputs in out/demo: mask.tif candidates.tif mask.gpkg mask.geojson overlay.png result.json"

test:
	./scripts/setup.sh test
	.venv/bin/python -m pytest -q

setup:
	./scripts/setup.sh test
