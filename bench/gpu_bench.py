"""scVI training cells/s on one GPU (or the CPU, for testing): pybridge vs scvi-tools 1.4.2, batch 128 and 1,024.

Simulated negative-binomial counts (pybridge.data.synthetic.simulate_nb_blocks, 8 cell types, seed 0) are made
once; each tool then runs in its own fresh process with the interpreter this script runs under and, for each
batch size, trains a new scVI model (128 hidden, 10 latent, 1 layer, ZINB, gene dispersion, Adam lr 1e-3 /
eps 0.01, KL warm-up 400 epochs, train_size=1.0) for ``--epochs`` epochs. Reported: warm cells/s (end of
epoch 1 to the end of the last epoch; epoch 1 carries CUDA start-up, compilation and caching), the whole
``train()`` call's seconds, and the bare matrix-product floor at the same batch size on the same device
(matmul_floor.py) with the fraction of it each tool reaches. A tool that cannot be imported is reported as
unavailable (with the reason), and the other is timed alone.

Usage: python3 bench/gpu_bench.py --device cuda --out DIR    (bench/gpu.sh wraps this for the GPU machine)
       python3 bench/gpu_bench.py --dry-run --out DIR        (CPU, tiny sizes: checks the plumbing)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
TOOLS = ("pybridge", "scvi-tools")


# ------------------------------------------------------------------------------------------ worker side


def run_worker(args: argparse.Namespace) -> None:
    import anndata
    import scipy.sparse as sp
    import torch
    from bench_scvi import MODEL_KWARGS, train_pybridge, train_scvi_tools
    from matmul_floor import floor_seconds_per_cell

    module = "pybridge" if args.worker == "pybridge" else "scvi"
    version = __import__(module).__version__
    counts = sp.load_npz(args.data).astype(np.float32)
    n_cells, n_genes = counts.shape
    results = {"tool": args.worker, "tool_version": version, "torch": torch.__version__, "runs": []}
    for batch_size in args.batch_sizes:
        adata = anndata.AnnData(counts.copy())
        train = train_pybridge if args.worker == "pybridge" else train_scvi_tools
        _, timings = train(adata, args.epochs, batch_size, 0, args.device, **json.loads(args.extra))
        floor = floor_seconds_per_cell(n_genes, MODEL_KWARGS["n_hidden"], batch_size, device=args.device)
        run = {
            "train_call_seconds": timings["train_call_seconds"],
            "batch_size": batch_size,
            "first_epoch_seconds": timings["first_epoch_end_seconds"],
            "warm_cells_per_second": n_cells * timings["warm_epochs"] / timings["warm_seconds"],
            "floor_cells_per_second": 1.0 / floor,
        }
        run["floor_fraction"] = run["warm_cells_per_second"] / run["floor_cells_per_second"]
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
    Path(args.out, f"{args.worker}.json").write_text(json.dumps(results, indent=2))


# ------------------------------------------------------------------------------------------ parent side


def make_data(path: Path, n_cells: int, n_genes: int) -> None:
    import scipy.sparse as sp

    sys.path.insert(0, str(REPO_ROOT))
    from pybridge.data.synthetic import simulate_nb_blocks

    blocks = simulate_nb_blocks(n_cells, n_genes, seed=0, genes_per_type=min(600, n_genes), n_types=8)
    sp.save_npz(path, sp.vstack(list(blocks), format="csr"), compressed=False)


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def launch(tool: str, data: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, "--data", str(data),
               "--out", str(args.out), "--device", args.device, "--epochs", str(args.epochs),
               "--extra", args.pybridge_kwargs if tool == "pybridge" else "{}",
               "--batch-sizes", *map(str, args.batch_sizes)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), str(HERE), env.get("PYTHONPATH", "")]))
    log = Path(args.out, f"{tool}.log")
    try:
        with open(log, "w") as handle:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                  timeout=args.tool_timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        return {"tool": tool, "unavailable": f"timed out after {args.tool_timeout} s (log {log.name})"}
    result = Path(args.out, f"{tool}.json")
    if code != 0 or not result.exists():
        lines = log.read_text().strip().splitlines() or ["(no output)"]
        return {"tool": tool, "unavailable": f"exit {code}: {lines[-1][:300]} (log {log.name})"}
    return json.loads(result.read_text())


def markdown(results: list[dict], context: dict) -> str:
    lines = [
        "## scVI training on one GPU: pybridge vs scvi-tools 1.4.2",
        "",
        (
            f"Date: {context['date']} · device: {context['device']} · {context['cells']:,} simulated cells × "
            f"{context['genes']:,} genes · {context['epochs']} epochs per run (warm = epochs 2..{context['epochs']})"
            f" · `bench/gpu.sh` ({context['wall_seconds']:.0f} s in all)"
        ),
        "",
        "| tool | batch | train() s | first epoch s | warm cells/s | floor cells/s | floor fraction |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        if "unavailable" in result:
            lines.append(f"| {result['tool']} | — | unavailable: {result['unavailable']} | | | | |")
            continue
        for run in result["runs"]:
            lines.append(
                f"| {result['tool']} {result['tool_version']} | {run['batch_size']:,} | "
                f"{run['train_call_seconds']:.1f} | {run['first_epoch_seconds']:.1f} | "
                f"{run['warm_cells_per_second']:,.0f} | {run['floor_cells_per_second']:,.0f} | "
                f"{run['floor_fraction']:.1%} |"
            )
    lines += ["", (
        "Floor = the bare encoder-first-layer and decoder-head matrix products (forward + backward) at "
        "the same batch size on the same device (bench/matmul_floor.py)."
    )]
    return "\n".join(lines) + "\n"


def run_parent(args: argparse.Namespace) -> None:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: --device cuda but torch.cuda.is_available() is False (pass --device cpu)")
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "counts.npz"
    make_data(data, args.cells, args.genes)
    print(f"[{time.strftime('%H:%M:%S')}] data {args.cells} x {args.genes} ready", flush=True)
    results = []
    for tool in args.tools:
        print(f"[{time.strftime('%H:%M:%S')}] {tool}", flush=True)
        results.append(launch(tool, data, args))
    data.unlink()
    context = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_name(args.device) + f", Python {platform.python_version()}",
        "cells": args.cells, "genes": args.genes, "epochs": args.epochs,
        "wall_seconds": time.perf_counter() - start,
    }
    (out / "gpu_bench.json").write_text(json.dumps({"context": context, "results": results}, indent=2))
    table = markdown(results, context)
    (out / "gpu_bench.md").write_text(table)
    print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dry-run", action="store_true", help="CPU, 2,000 cells x 200 genes, 2 epochs")
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--tool-timeout", type=int, default=150, help="seconds per tool before giving up")
    parser.add_argument("--pybridge-kwargs", default="{}", help='extra train() keywords for pybridge, JSON')
    parser.add_argument("--out", default="gpu_bench_out")
    parser.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.cells, args.genes, args.epochs = "cpu", 2_000, 200, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
