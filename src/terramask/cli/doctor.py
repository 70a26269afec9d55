"""``terramask doctor``: this machine, the runtimes installed, and which one is fastest here.

The fastest runtime per model family is measured, not assumed
(:mod:`terramask.models.runtime_choice`): ``--measure`` times one encode of a fixed random
tile with every installed runtime for a cached model of each family (or ``--model``) and
records the winner for this machine; ``--runtime auto`` then uses it. Without
``--measure`` the command only reads what was measured before.
"""

from __future__ import annotations

import json

import click

FAMILIES = ("sam", "mobilesam", "sam2")  # the families with ONNX / OpenVINO runtimes
RUNTIME_COLUMNS = ("torch", "onnx", "openvino")


def _openvino_line() -> tuple[str, dict | None]:
    """One line about OpenVINO on this CPU and the settings backends would use."""
    try:
        from terramask.models.openvino.backend import cpu_description, machine_settings
        from terramask.models.openvino.settings import supported_precisions

        name, caps = cpu_description()
        settings = machine_settings()
    except Exception as exc:  # a diagnosis reports a broken runtime instead of failing on it
        return f"not usable: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}", None
    precisions = supported_precisions(caps)
    info = {"device": name, "capabilities": list(caps), "precisions": list(precisions),
            "threads": settings.threads, "precision": settings.precision, "hint": settings.hint}
    return f"CPU {name}; native {', '.join(precisions)}; compiles with {settings.describe()}", info


def _measure_targets(models: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Models to measure (``--model`` names, else the smallest cached model of each family)
    and notes for families with nothing cached."""
    from terramask.models.download import is_cached
    from terramask.models.registry import list_specs

    if models:
        return list(models), []
    targets, notes = [], []
    for family in FAMILIES:
        specs = sorted((s for s in list_specs() if s.family == family), key=lambda s: s.params_millions or 0.0)
        cached = [s for s in specs if is_cached(s)]
        if cached:
            targets.append(cached[0].name)
        elif specs:
            notes.append(f"{family}: no checkpoint in the cache (terramask models download {specs[0].name})")
    return targets, notes


def _table(measured: dict) -> list[str]:
    header = ("FAMILY", "FASTEST", *(r.upper() for r in RUNTIME_COLUMNS), "MODEL", "MEASURED")
    rows = []
    for family in FAMILIES:
        m = measured.get(family)
        if m is None:
            rows.append((family, "not measured", *("-" for _ in RUNTIME_COLUMNS), "-", "-"))
            continue
        cells = [f"{m.seconds[r]:.2f} s" if r in m.seconds else ("failed" if r in m.failed else "-")
                 for r in RUNTIME_COLUMNS]
        rows.append((family, m.fastest, *cells, m.model, m.measured_at))
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [header, *rows]]


@click.command("doctor")
@click.option("--measure", is_flag=True,
              help="Time one encode per installed runtime now (a cached model of each family, or --model) "
                   "and record the fastest for this machine.")
@click.option("--model", "models", multiple=True, help="Model to measure with --measure (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def command(measure: bool, models: tuple[str, ...], as_json: bool) -> None:
    """Show this machine (CPU, usable cores, instruction sets), the installed runtimes and,
    per model family, which runtime encodes fastest here (measured once and cached; what
    `--runtime auto` uses)."""
    from terramask.core.errors import InputError, ModelError
    from terramask.models.registry import get_spec
    from terramask.models.resolve import measure_runtimes
    from terramask.models.runtime_choice import ChoiceCache, available_runtimes, format_seconds

    if models and not measure:
        raise InputError("--model chooses what --measure times; add --measure")
    cache = ChoiceCache()
    available = available_runtimes()
    notes: list[str] = []
    if measure:
        targets, notes = _measure_targets(models)
        for name in targets:  # refuse a model without these runtimes before measuring any
            spec = get_spec(name)
            if spec.family not in FAMILIES:
                raise ModelError(f"model {spec.name!r} ({spec.family}) runs only on torch; nothing to measure "
                                 f"(runtimes are measured for {', '.join(FAMILIES)})")
        for name in targets:
            if not as_json:
                click.echo(f"measuring {name} with {', '.join(available)} ...", err=True)
            result = measure_runtimes(name)
            if not as_json:
                click.echo(f"{result.family}: fastest {result.fastest} ({format_seconds(result)})", err=True)
    measured = cache.measurements()
    ov_text, ov_info = _openvino_line()
    machine = cache.machine
    if as_json:
        click.echo(json.dumps({
            "machine": machine, "runtimes_installed": list(available), "openvino": ov_info,
            "choice_cache": str(cache.path),
            "families": {f: (measured[f].to_json() if f in measured else None) for f in FAMILIES},
            "notes": notes,
        }, indent=2))
        return
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    flags = ", ".join(machine["flags"]) or "none of note"
    click.echo(f"machine    {machine['cpu']}, {machine['cores']} usable core(s); instruction sets: {flags}")
    click.echo(f"packages   {versions}")
    click.echo(f"runtimes   {', '.join(available) or 'none'} installed (onnx-int8 changes results: never chosen by auto)")
    click.echo(f"openvino   {ov_text}")
    click.echo(f"measured   {cache.path} (machine key {cache.key})")
    click.echo("")
    for line in _table(measured):
        click.echo(line)
    for note in notes:
        click.echo(note)
    if any(f not in measured for f in FAMILIES):
        click.echo("\nnot measured: run `terramask doctor --measure` (uses cached checkpoints), "
                   "or any command with --runtime auto measures its model's family on first use")
