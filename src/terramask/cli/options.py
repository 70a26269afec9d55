"""Click options and parsers shared by several subcommands."""

from __future__ import annotations

import click

from terramask.core.errors import InputError


def model_options(f):
    """``--model``, ``--checkpoint``, ``--device``."""
    f = click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")(f)
    f = click.option(
        "--checkpoint",
        type=click.Path(dir_okay=False),
        help="Local checkpoint file to use instead of the cached/downloaded one.",
    )(f)
    f = click.option(
        "--model",
        "model",
        help="Model name from `terramask models list` (default: $TERRAMASK_MODEL, "
        "else the best cached SAM checkpoint, else the weight-free classic engine).",
    )(f)
    return f


def parse_numbers(text: str, what: str, counts: tuple[int, ...]) -> list[float]:
    """``"1,2,3"`` -> ``[1.0, 2.0, 3.0]`` with a length in ``counts``, else InputError."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise InputError(f"{what} {text!r}: expected comma-separated numbers") from None
    if len(values) not in counts:
        raise InputError(f"{what} {text!r}: expected {' or '.join(map(str, counts))} numbers, got {len(values)}")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """``"X,Y"`` or ``"X,Y,LABEL"`` (label 1 object, 0 background; default 1)."""
    values = parse_numbers(text, "--point", (2, 3))
    label = values[2] if len(values) == 3 else 1.0
    if label not in (0.0, 1.0):
        raise InputError(f"--point {text!r}: the label must be 1 (object) or 0 (background)")
    return values[0], values[1], int(label)


def parse_box(text: str) -> list[float]:
    """``"X1,Y1,X2,Y2"``."""
    return parse_numbers(text, "--box", (4,))


def runtime_option(f):
    """``--runtime torch|onnx|onnx-int8`` (ONNX Runtime exports the checkpoint once into the cache)."""
    return click.option(
        "--runtime",
        type=click.Choice(["torch", "onnx", "onnx-int8"]),
        default="torch",
        show_default=True,
        help="Inference runtime: PyTorch, ONNX Runtime, or ONNX Runtime with an int8 encoder (changes results).",
    )(f)
