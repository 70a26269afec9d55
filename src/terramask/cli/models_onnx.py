"""``terramask models export-onnx``: turn a checkpoint into ONNX encoder + decoder models.

The click command is :data:`export_onnx_command`; the lead attaches it to the
``models`` group (``command.add_command(export_onnx_command)`` in ``terramask.cli.models``).
"""

from __future__ import annotations

import click


@click.command(name="export-onnx", short_help="Export a SAM / MobileSAM checkpoint to ONNX (encoder + decoder).")
@click.argument("name")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Local checkpoint to export instead of the cached one.")
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset.")
@click.option("--quantize", is_flag=True, help="Also write encoder.int8.onnx (static int8 calibrated on real tiles, then checked against the float "
              "encoder; CHANGES RESULTS; offered as --runtime onnx-int8 only if faster and >= 0.98 mean IoU).")
@click.option("--force", is_flag=True, help="Replace an existing export in --out.")
@click.option("--download", is_flag=True, help="Download the checkpoint first when it is not cached.")
def export_onnx_command(name, out_dir, checkpoint, opset, quantize, force, download) -> None:
    """Export model NAME (e.g. sam-vit-b, mobilesam; a SAM checkpoint path; or a fine-tuning
    run directory, `terramask finetune --out RUN_DIR`) to ONNX.

    Writes encoder.onnx, decoder.onnx (points, boxes, prior mask; batched prompts),
    optionally encoder.int8.onnx, and terramask-onnx.json (source checkpoint SHA-256,
    input size, opset). Use the folder with `--runtime onnx --checkpoint DIR` (a run directory also works
    directly: `--model RUN_DIR --runtime onnx` exports it once into the cache).
    """
    from terramask.models.onnx.export import export_onnx

    result = export_onnx(name, out_dir, checkpoint=checkpoint, opset=opset, quantize=quantize, overwrite=force, download=download)
    files = [result.encoder, result.decoder] + ([result.encoder_int8] if result.encoder_int8 else [])
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in files)
    click.echo(f"exported {result.metadata['model']} (sha256 {result.metadata['source_sha256'][:12]}) to {result.directory}: {sizes}")
    if result.encoder_int8:
        from terramask.models.onnx.quantize import int8_check, refusal

        check = int8_check(result.metadata)
        measured = f" ({check.speedup:.2f}x the float speed, mean IoU {check.mean_iou:.3f})" if check else ""
        reason = refusal(str(result.metadata["model"]), check)
        click.echo(f"note: encoder.int8.onnx is quantised and gives results that differ from the float model{measured}; "
                   + ("offered as --runtime onnx-int8" if reason is None else reason))
