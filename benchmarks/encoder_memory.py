"""Peak memory (and CPU time) of one image-encoder pass: official attention vs terramask's
chunked global attention (issue 9).

Each measurement runs in a fresh interpreter (peak RSS is per process): the model is built
with random weights (the official architecture; memory does not depend on weight values),
then one 1024 x 1024 image is encoded. Reported: RSS after building the model, peak RSS
during the encode, and the difference (the encoder's transient memory). ``--timing``
also times both attentions alternately in one process (CPU seconds, min of the runs).

    .venv/bin/python benchmarks/encoder_memory.py                  # SAM ViT-B
    .venv/bin/python benchmarks/encoder_memory.py --model mobilesam
    .venv/bin/python benchmarks/encoder_memory.py --timing 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build(model: str, threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if model == "mobilesam":
        from terramask.models.sam.mobilesam import build_mobilesam_model

        return build_mobilesam_model().image_encoder.eval()
    from terramask.models.sam.checkpoint import OFFICIAL_ARCHS, SamArch, build_sam_model

    embed, depth, heads, glob = OFFICIAL_ARCHS[model]
    return build_sam_model(SamArch(embed, depth, heads, glob)).image_encoder.eval()


def child(model: str, chunked: bool, threads: int) -> dict:
    """One encode in this process; returns the memory numbers."""
    import torch

    from terramask.models.sam.encoder_attention import chunk_global_attention

    encoder = _build(model, threads)
    changed = chunk_global_attention(encoder) if chunked else 0
    x = torch.zeros(1, 3, 1024, 1024)
    base = _rss_mb()
    t0 = time.process_time()
    with torch.inference_mode():
        encoder(x)
    return {
        "model": model,
        "attention": "chunked" if chunked else "official",
        "global_blocks_chunked": changed,
        "rss_after_build_mb": round(base, 1),
        "peak_rss_mb": round(_peak_mb(), 1),
        "encode_transient_mb": round(_peak_mb() - base, 1),
        "cpu_s": round(time.process_time() - t0, 2),
    }


def timing(model: str, runs: int, threads: int) -> dict:
    """Both attentions alternately in one process (CPU seconds, min of ``runs``)."""
    import torch

    from terramask.models.sam.encoder_attention import chunk_global_attention, official_attention

    encoder = _build(model, threads)
    chunk_global_attention(encoder)
    x = torch.zeros(1, 3, 1024, 1024)
    times: dict[str, list[float]] = {"official": [], "chunked": []}
    with torch.inference_mode():
        encoder(x)  # warm-up
        for _ in range(runs):
            with official_attention(encoder):
                t0 = time.process_time()
                encoder(x)
                times["official"].append(time.process_time() - t0)
            t0 = time.process_time()
            encoder(x)
            times["chunked"].append(time.process_time() - t0)
    return {k: round(min(v), 2) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "mobilesam"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timing", type=int, default=0, help="also time both attentions, this many runs each")
    ap.add_argument("--child", choices=["official", "chunked"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.child == "chunked", args.threads)))
        return
    for mode in ("official", "chunked"):
        cmd = [sys.executable, __file__, "--model", args.model, "--threads", str(args.threads), "--child", mode]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1])
    if args.timing:
        print(json.dumps({"model": args.model, "cpu_s_min": timing(args.model, args.timing, args.threads)}))


if __name__ == "__main__":
    main()
