"""The ``terramask`` command: a thin shell over the pipelines.

Each subcommand lives in its own module ``terramask.cli.<name>`` exposing a click
command (or group) called ``command``; they are imported only when invoked, so
``terramask --help`` stays fast and a missing optional package only breaks the
command that needs it. Errors derived from :class:`TerramaskError` become one line on
stderr and exit code 2 (bad input) or 1 (anything else we anticipated).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

from terramask.core.errors import InputError, TerramaskError

# name -> (module, one-line help). Order is the order of `terramask --help`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("terramask.cli.predict", "Segment objects from point/box prompts; write georeferenced masks."),
    "auto": ("terramask.cli.auto", "Segment everything (automatic mask generation) in a scene of any size."),
    "find": ("terramask.cli.find", "Find every object like some examples (or named by text) in a scene, with classes."),
    "batch": ("terramask.cli.batch", "Run automatic segmentation over many scenes, resumably."),
    "embed": ("terramask.cli.embed", "Precompute and cache image embeddings for every tile of a scene."),
    "eval": ("terramask.cli.eval", "Measure quality against labels (IoU, boundary F, NoC@85/90, recall)."),
    "finetune": ("terramask.cli.finetune", "Fine-tune SAM's mask decoder on your labels; report the before/after gain."),
    "serve": ("terramask.cli.serve", "Segment a scene interactively in a web browser (points, boxes, refinement, export)."),
    "models": ("terramask.cli.models", "List, download and locate model checkpoints; export ONNX."),
    "stac": ("terramask.cli.stac", "Search a STAC API for items to segment (written as files for batch)."),
    "doctor": ("terramask.cli.doctor", "This machine, the installed runtimes and which one is fastest here (measured)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _) in SUBCOMMANDS.items() if importlib.util.find_spec(module) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module_name, short_help = SUBCOMMANDS[name]
        if importlib.util.find_spec(module_name) is None:
            return None
        command = importlib.import_module(module_name).command
        command.short_help = command.short_help or short_help
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="terramask")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """terramask: Segment Anything for remote-sensing imagery."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI, turning anticipated errors into one line."""
    try:
        # standalone_mode=False returns a subcommand's ctx.exit(code) instead of exiting.
        result = cli.main(args=argv, prog_name="terramask", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except TerramaskError as exc:
        click.echo(f"terramask: error: {exc}", err=True)
        return 2 if isinstance(exc, InputError) else 1
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
