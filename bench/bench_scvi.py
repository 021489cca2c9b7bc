"""Side-by-side scVI benchmark: pybridge.SCVI against scvi-tools 1.4.2, in one run.

Both tools train the same architecture (1 hidden layer of 128, 10 latent dims, ZINB, gene dispersion,
dropout 0.1, default batch norm) for the same number of epochs with batch size 128, Adam lr 1e-3,
eps 0.01, weight decay 1e-6 and a 400-epoch KL warm-up, on the same training cells with the same
seed. The held-out cells (a fixed ~10 % split drawn once per dataset) are never seen in training by
either tool: each tool trains on the training subset with ``train_size=1.0`` and is evaluated on
the held-out subset through its public API.

Each tool runs in its own subprocess with its own interpreter (scvi-tools from bench/.venv-scvi,
pybridge from .venv) so that its peak resident memory can be read from ``os.wait4``.

Reported quantities (same definition for both tools):
  * throughput: training cells x epochs / training wall seconds. scvi-tools: the Lightning fit loop
    (``on_train_start`` -> ``on_train_end``, i.e. after its data-loader/trainer setup);
    pybridge: the whole ``model.train()`` call (setup included, so pybridge is not favoured).
  * held-out ELBO: per-cell mean of -(reconstruction NLL + KL(q(z|x) || p(z))) with KL weight 1,
    a negative number, higher is better (what scvi-tools 1.4.2 ``get_elbo`` returns).
  * held-out reconstruction error: per-cell mean reconstruction NLL, positive (what scvi-tools 1.4.2
    ``get_reconstruction_error()["reconstruction_loss"]`` returns, whatever its docstring says).
  * silhouette of the latent mean by ``cell_type`` (sklearn, euclidean), on all cells and on the
    held-out cells; computed here, in the parent, with one sklearn for both tools.
  * peak RSS of the tool's process (``ru_maxrss``), including interpreter, imports and the data.

Usage (from the repository root):
    bash bench/setup_scvi_venv.sh && .venv/bin/python bench/bench_scvi.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_HEADING = "## scVI training: pybridge vs scvi-tools 1.4.2"
TOOLS = ("scvi-tools", "pybridge")
MODEL_KWARGS = {
    "n_hidden": 128,
    "n_latent": 10,
    "n_layers": 1,
    "dropout_rate": 0.1,
    "dispersion": "gene",
    "gene_likelihood": "zinb",
}
OPTIMISER_KWARGS = {"lr": 1e-3, "weight_decay": 1e-6, "eps": 0.01, "n_epochs_kl_warmup": 400}


# --------------------------------------------------------------------------------------------
# Worker side: runs inside the tool's own interpreter.
# --------------------------------------------------------------------------------------------


def _train_scvi_tools(
    adata_train, epochs: int, batch_size: int, seed: int
) -> tuple[object, float, float, float]:
    """Train scvi-tools SCVI; return (model, fit-loop seconds, fit-loop CPU seconds, train() call seconds)."""
    import scvi
    from lightning.pytorch.callbacks import Callback

    class FitLoopTimer(Callback):
        def on_train_start(self, trainer, pl_module):
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_train_end(self, trainer, pl_module):
            self.seconds = time.perf_counter() - self.start
            self.cpu_seconds = time.process_time() - self.cpu_start

    scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(adata_train)
    model = scvi.model.SCVI(adata_train, **MODEL_KWARGS)
    timer = FitLoopTimer()
    start = time.perf_counter()
    model.train(
        max_epochs=epochs,
        batch_size=batch_size,
        train_size=1.0,
        early_stopping=False,
        accelerator="cpu",
        enable_progress_bar=False,
        plan_kwargs=OPTIMISER_KWARGS,
        callbacks=[timer],
    )
    call_seconds = time.perf_counter() - start
    return model, timer.seconds, timer.cpu_seconds, call_seconds


def _evaluate_scvi_tools(model, adata_val, adata_all) -> dict:
    elbo = float(model.get_elbo(adata_val))  # 1.4.2: returns -(recon + kl_local), i.e. the ELBO
    if elbo >= 0:
        raise RuntimeError(f"scvi-tools get_elbo returned {elbo} >= 0; expected the (negative) ELBO")
    recon = float(model.get_reconstruction_error(adata_val)["reconstruction_loss"])
    if recon <= 0:
        raise RuntimeError(f"scvi-tools reconstruction_loss {recon} <= 0; expected the (positive) NLL")
    return {
        "elbo_heldout": elbo,
        "reconstruction_heldout": recon,
        "latent": model.get_latent_representation(adata_all, give_mean=True),
    }


def _train_pybridge(
    adata_train, epochs: int, batch_size: int, seed: int
) -> tuple[object, float, float, float]:
    """Train pybridge SCVI; return (model, train() seconds, train() CPU seconds, train() seconds)."""
    import pybridge

    pybridge.SCVI.setup_anndata(adata_train)
    model = pybridge.SCVI(adata_train, **MODEL_KWARGS)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.train(
        max_epochs=epochs,
        batch_size=batch_size,
        train_size=1.0,
        early_stopping=False,
        accelerator="cpu",
        seed=seed,
        progress=False,
        **OPTIMISER_KWARGS,
    )
    call_seconds = time.perf_counter() - start
    return model, call_seconds, time.process_time() - cpu_start, call_seconds


def _evaluate_pybridge(model, adata_val, adata_all) -> dict:
    # A count model's ELBO is always < 0 and its reconstruction NLL always > 0, so the signs are normalised
    # here: the core contract (positive NLLs) and scvi-tools' convention (ELBO < 0) both map to the same thing.
    elbo = model.get_elbo(adata_val)
    recon = model.get_reconstruction_error(adata_val)
    recon = recon["reconstruction_loss"] if isinstance(recon, dict) else recon
    return {
        "elbo_heldout": -abs(float(elbo)),
        "reconstruction_heldout": abs(float(recon)),
        "latent": model.get_latent_representation(adata_all, give_mean=True),
    }


WORKERS = {
    "scvi-tools": (_train_scvi_tools, _evaluate_scvi_tools, "scvi"),
    "pybridge": (_train_pybridge, _evaluate_pybridge, "pybridge"),
}


def run_worker(args: argparse.Namespace) -> None:
    """Train and evaluate one tool on one dataset; write <out>/<tool>.json and <tool>_latent.npy."""
    import importlib

    import anndata
    import torch

    torch.set_num_threads(args.threads)
    train_fn, evaluate_fn, module_name = WORKERS[args.worker]
    split = np.load(args.split)
    adata = anndata.read_h5ad(args.data)
    adata_train = adata[split["train"]].copy()
    adata_val = adata[split["validation"]].copy()

    model, train_seconds, train_cpu_seconds, call_seconds = train_fn(
        adata_train, args.epochs, args.batch_size, args.seed
    )
    results = evaluate_fn(model, adata_val, adata)
    latent = np.asarray(results.pop("latent"), dtype=np.float32)
    out = Path(args.out)
    np.save(out / f"{args.worker}_latent.npy", latent)
    n_train = int(adata_train.n_obs)
    results.update(
        tool=args.worker,
        tool_version=importlib.import_module(module_name).__version__,
        torch_version=torch.__version__,
        torch_threads=torch.get_num_threads(),
        n_train=n_train,
        n_validation=int(adata_val.n_obs),
        epochs=args.epochs,
        train_seconds=train_seconds,
        train_call_seconds=call_seconds,
        train_cpu_seconds=train_cpu_seconds,
        throughput=n_train * args.epochs / train_seconds,
        throughput_per_cpu_second=n_train * args.epochs / train_cpu_seconds,
    )
    (out / f"{args.worker}.json").write_text(json.dumps(results, indent=2))


# --------------------------------------------------------------------------------------------
# Parent side: split, launch workers, score, write RESULTS.md.
# --------------------------------------------------------------------------------------------


def heldout_split(n_cells: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random split; the validation size follows scvi-tools (n - ceil(train_size * n))."""
    n_train = int(np.ceil((1.0 - validation_fraction) * n_cells))
    order = np.random.default_rng(seed).permutation(n_cells)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def launch(tool: str, python: Path, dataset: Path, split: Path, workdir: Path, args) -> dict:
    """Run one worker subprocess; return its results plus its peak RSS in MiB."""
    command = [
        str(python),
        str(Path(__file__).resolve()),
        "--worker",
        tool,
        "--data",
        str(dataset),
        "--split",
        str(split),
        "--out",
        str(workdir),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
    ]
    # PYBRIDGE_MALLOC_TUNING: a benchmark process is ours, as the CLI's is (no effect on scvi-tools)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MPLBACKEND="Agg", PYBRIDGE_MALLOC_TUNING="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    log_path = workdir / f"{tool}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{tool} failed on {dataset.name} (log {log_path}):\n{tail}")
    results = json.loads((workdir / f"{tool}.json").read_text())
    results["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux: KiB
    results["latent"] = np.load(workdir / f"{tool}_latent.npy")
    return results


def silhouettes(latent: np.ndarray, labels: np.ndarray, validation: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import silhouette_score

    return (
        float(silhouette_score(latent, labels, metric="euclidean")),
        float(silhouette_score(latent[validation], labels[validation], metric="euclidean")),
    )


def machine_description(threads: int) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return f"{os.cpu_count()} CPU cores (nproc), {cpu}, torch threads {threads}, Python {platform.python_version()}"


def format_section(rows: list[dict], context: dict) -> str:
    lines = [
        RESULTS_HEADING,
        "",
        (
            f"Date: {context['date']} · machine: {context['machine']} · torch {context['torch']} (both tools) · "
            f"GPU: none · load average before/after: {context['load_before']} / {context['load_after']}"
        ),
        "",
        (
            f"Same architecture (n_hidden 128, n_latent 10, 1 layer, ZINB, gene dispersion, dropout 0.1), batch "
            f"{context['batch_size']}, {context['epochs']} epochs, Adam lr 1e-3 / eps 0.01 / wd 1e-6, KL warm-up "
            f"400 epochs, seed {context['seed']}, same held-out cells ({context['validation_fraction']:.0%} fixed split; "
            "each tool trains on the rest with train_size=1.0). Produced by `bench/bench_scvi.py` in one run."
        ),
        "",
        (
            "| dataset | tool | train cells | train s | train cells/s | train cells/CPU-s | held-out ELBO "
            "| held-out recon. NLL | silhouette all | silhouette held-out | peak RSS MiB |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['tool']} {row['tool_version']} | {row['n_train']:,} | "
            f"{row['train_seconds']:.1f} | {row['throughput']:,.0f} | {row['throughput_per_cpu_second']:,.0f} | "
            f"{row['elbo_heldout']:,.1f} | "
            f"{row['reconstruction_heldout']:,.1f} | {row['silhouette_all']:.3f} | "
            f"{row['silhouette_heldout']:.3f} | {row['peak_rss_mib']:,.0f} |"
        )
    lines += [
        "",
        (
            "| dataset | throughput pybridge / scvi-tools | per CPU-s | held-out ELBO gap (pybridge − scvi-tools) "
            "| acceptance (≥ 2× wall throughput and gap ≥ −1 % of the scvi-tools ELBO magnitude) |"
        ),
        "|---|---:|---:|---:|---|",
    ]
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        by_tool = {row["tool"]: row for row in rows if row["dataset"] == dataset}
        if set(TOOLS) - set(by_tool):
            continue
        reference, candidate = by_tool["scvi-tools"], by_tool["pybridge"]
        speedup = candidate["throughput"] / reference["throughput"]
        cpu_speedup = candidate["throughput_per_cpu_second"] / reference["throughput_per_cpu_second"]
        gap = candidate["elbo_heldout"] - reference["elbo_heldout"]
        relative = gap / abs(reference["elbo_heldout"])
        verdict = "pass" if speedup >= 2 and relative >= -0.01 else "FAIL"
        lines.append(
            f"| {dataset} | {speedup:.2f}× | {cpu_speedup:.2f}× | {gap:+,.1f} ({relative:+.2%}) | {verdict} |"
        )
    lines += [
        "",
        (
            "Throughput timing: scvi-tools = Lightning fit loop only (after its setup); pybridge = the whole "
            "`train()` call. Train cells/CPU-s uses the process CPU time (all threads) over the same interval: with "
            "1 thread and a busy machine it estimates the quiet-machine speed better than wall time. ELBO = −(reconstruction NLL + KL) per cell with KL weight 1 (higher is better), one "
            "posterior sample per cell, both models in eval mode. Peak RSS = ru_maxrss of the tool's own process "
            "(interpreter, imports, data and model). scvi-tools reference figures measured earlier on this "
            "machine kind: zeisel_cortex 2,925 train cells/s, held-out ELBO −6,417; cbmc_rna 14,560 train "
            "cells/s, held-out ELBO −756."
        ),
    ]
    if context.get("note"):
        lines += ["", context["note"]]
    return "\n".join(lines) + "\n"


def write_section(results_md: Path, section: str) -> None:
    """Replace this benchmark's section in RESULTS.md (or append it), keeping other sections."""
    text = results_md.read_text() if results_md.exists() else "# pybridge benchmarks\n"
    start = text.find(RESULTS_HEADING)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(RESULTS_HEADING))
        rest = "" if end == -1 else text[end + 1 :]
        text = text[:start] + section + ("\n" + rest if rest else "")
    tmp = results_md.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(results_md)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_benchmark(args: argparse.Namespace) -> None:
    import anndata

    pythons = {"scvi-tools": Path(args.scvi_python), "pybridge": Path(args.pybridge_python)}
    for tool in args.tools:
        if not pythons[tool].exists():
            hint = (
                "run `bash bench/setup_scvi_venv.sh`"
                if tool == "scvi-tools"
                else "run `make test` or build .venv"
            )
            raise SystemExit(f"{tool} interpreter {pythons[tool]} not found: {hint}")
    data_dir = Path(args.data_dir)
    context = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(args.threads),
        "load_before": load_average(),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "validation_fraction": args.validation_fraction,
        "note": args.note,
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scvi_") as tmp:
        for name in args.datasets:
            dataset = data_dir / f"{name}.h5ad"
            if not dataset.exists():
                raise SystemExit(f"dataset {dataset} not found: pass --data-dir (expected {name}.h5ad there)")
            labels = anndata.read_h5ad(dataset, backed="r").obs["cell_type"].astype(str).to_numpy()
            train, validation = heldout_split(len(labels), args.validation_fraction, args.seed)
            workdir = Path(tmp) / name
            workdir.mkdir()
            split = workdir / "split.npz"
            np.savez(split, train=train, validation=validation)
            for tool in args.tools:
                print(f"[{time.strftime('%H:%M:%S')}] {name}: {tool} (load {load_average()})", flush=True)
                row = launch(tool, pythons[tool], dataset, split, workdir, args)
                row["silhouette_all"], row["silhouette_heldout"] = silhouettes(
                    row.pop("latent"), labels, validation
                )
                row["dataset"] = name
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items()}, default=str), flush=True)
    context["load_after"] = load_average()
    context["torch"] = ", ".join(sorted({row["torch_version"] for row in rows}))
    section = format_section(rows, context)
    print(section)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"context": context, "rows": rows}, indent=2))
    if set(args.tools) == set(TOOLS) and not args.no_write:
        write_section(Path(args.results), section)
        print(f"wrote {args.results}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=str(REPO_ROOT.parent / "shared" / "data"),
        help="folder holding zeisel_cortex.h5ad and cbmc_rna.h5ad (default: ../shared/data)",
    )
    parser.add_argument("--datasets", nargs="+", default=["zeisel_cortex", "cbmc_rna"])
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per tool")
    parser.add_argument("--scvi-python", default=str(REPO_ROOT / "bench" / ".venv-scvi" / "bin" / "python"))
    parser.add_argument("--pybridge-python", default=str(REPO_ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--results", default=str(REPO_ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--json-out", default=None, help="also write the raw numbers as JSON here")
    parser.add_argument(
        "--no-write", action="store_true", help="print the table only, leave RESULTS.md alone"
    )
    parser.add_argument("--note", default="", help="a line added under the table (e.g. machine load)")
    # worker mode (internal): one tool, one dataset, inside that tool's interpreter
    parser.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--split", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
