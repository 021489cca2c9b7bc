"""Side-by-side scVI benchmark: pybridge.SCVI against scvi-tools 1.4.2, in one run.

Both tools train the same architecture (1 hidden layer of 128, 10 latent dims, ZINB, gene dispersion,
dropout 0.1, default batch norm) for the same number of epochs with batch size 128, Adam lr 1e-3,
eps 0.01, weight decay 1e-6 and a 400-epoch KL warm-up, on the same training cells with the same
seed. The held-out cells (a fixed ~10 % split drawn once per dataset) are never seen in training by
either tool: each tool trains on the training subset with ``train_size=1.0`` and is evaluated on
the held-out subset through its public API.

Each tool runs in its own subprocess with its own interpreter (scvi-tools from bench/.venv-scvi,
pybridge from .venv), which reports its own peak resident memory (VmHWM, bench/peak_rss.py).

Datasets: the shipped zeisel_cortex and cbmc_rna, and the derived pbmc3k_hvg2000 (pbmc3k_raw, 2,000 most
variable genes by the R package's ``ntop`` rule), pbmc3k_hvg2000_2k (2,000 of its cells) and sim100k (100,000
simulated NB cells x 2,000 genes); see bench_datasets.py. Each dataset has its own default epoch count so that
the whole run stays within minutes on 2 cores (DEFAULT_EPOCHS); ``--epochs`` sets one count for all.

Reported quantities (same definition for both tools):
  * cold ``train()``: wall seconds of the whole ``model.train()`` call, the first one in a fresh process
    (so it includes whatever a tool imports or compiles lazily at its first step; the package import and
    model construction before it are reported apart as setup seconds).
  * warm loop: from the end of the first epoch to the end of the last (Lightning ``on_train_epoch_end``;
    pybridge's per-epoch ``progress`` callback), as seconds per epoch and training cells per second.
  * matrix-product floor: the bare encoder-first-layer and decoder-head products of a step, forward and
    backward, at the same batch size, timed in the tool's own process after training (matmul_floor.py);
    floor fraction = floor seconds for an epoch's cells / the tool's warm seconds per epoch (1 = at the floor).
  * held-out ELBO: per-cell mean of -(reconstruction NLL + KL(q(z|x) || p(z))) with KL weight 1,
    a negative number, higher is better (what scvi-tools 1.4.2 ``get_elbo`` returns).
  * held-out reconstruction error: per-cell mean reconstruction NLL, positive (what scvi-tools 1.4.2
    ``get_reconstruction_error()["reconstruction_loss"]`` returns, whatever its docstring says).
  * silhouette of the latent mean by ``cell_type`` (sklearn, euclidean), on all cells and on the
    held-out cells; computed here, in the parent, with one sklearn for both tools.
  * peak RSS of the tool's process (VmHWM), including interpreter, imports and the data.

Usage (from the repository root):
    bash bench/setup_scvi_venv.sh && .venv/bin/python bench/bench_scvi.py
    .venv/bin/python bench/bench_scvi.py --acceptance   # cold train(), ~2,000 cells x 2,000 genes, 15 epochs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
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
DEFAULT_DATASETS = ["zeisel_cortex", "cbmc_rna", "pbmc3k_hvg2000", "sim100k"]
DEFAULT_EPOCHS = {"zeisel_cortex": 30, "cbmc_rna": 30, "pbmc3k_hvg2000": 30, "sim100k": 2, "pbmc3k_hvg2000_2k": 15}
ACCEPTANCE_DATASET, ACCEPTANCE_EPOCHS = "pbmc3k_hvg2000_2k", 15
WARM_SPEEDUP, COLD_SPEEDUP, ELBO_TOLERANCE = 3.0, 2.5, 0.005  # issue 12's acceptance


# --------------------------------------------------------------------------------------------
# Worker side: runs inside the tool's own interpreter.
# --------------------------------------------------------------------------------------------


def train_scvi_tools(
    adata_train, epochs: int, batch_size: int, seed: int, device: str = "cpu", **train_kwargs
) -> tuple[object, dict]:
    """Train scvi-tools SCVI on ``device`` ("cpu" or "cuda"); return (model, timings). Also bench/gpu_bench.py's."""
    setup_start = time.perf_counter()
    import scvi
    from lightning.pytorch.callbacks import Callback

    class EpochClock(Callback):
        def __init__(self):
            self.ends: list[float] = []

        def on_train_epoch_end(self, trainer, pl_module):
            self.ends.append(time.perf_counter())

    scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(adata_train)
    model = scvi.model.SCVI(adata_train, **MODEL_KWARGS)
    clock = EpochClock()
    start, cpu_start = time.perf_counter(), time.process_time()
    model.train(
        max_epochs=epochs,
        batch_size=batch_size,
        train_size=1.0,
        early_stopping=False,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        enable_progress_bar=False,
        plan_kwargs=OPTIMISER_KWARGS,
        callbacks=[clock],
        **train_kwargs,
    )
    end = time.perf_counter()
    return model, _timings(setup_start, start, end, time.process_time() - cpu_start, clock.ends)


def _timings(setup_start: float, start: float, end: float, cpu_seconds: float, epoch_ends: list[float]) -> dict:
    warm = epoch_ends[-1] - epoch_ends[0] if len(epoch_ends) > 1 else float("nan")
    return {
        "setup_seconds": start - setup_start,
        "train_call_seconds": end - start,
        "train_cpu_seconds": cpu_seconds,
        "first_epoch_end_seconds": epoch_ends[0] - start,
        "warm_seconds": warm,
        "warm_epochs": len(epoch_ends) - 1,
    }


def _evaluate_scvi_tools(model, adata_val, adata_all) -> dict:
    elbo = float(model.get_elbo(adata_val))  # 1.4.2: returns -(recon + kl_local), i.e. the ELBO
    if elbo >= 0:
        raise RuntimeError(f"scvi-tools get_elbo returned {elbo} >= 0; expected the (negative) ELBO")
    recon = float(model.get_reconstruction_error(adata_val)["reconstruction_loss"])
    if recon <= 0:
        raise RuntimeError(f"scvi-tools reconstruction_loss {recon} <= 0; expected the (positive) NLL")
    latent = model.get_latent_representation(adata_all, give_mean=True) if adata_all is not None else None
    return {"elbo_heldout": elbo, "reconstruction_heldout": recon, "latent": latent}


def train_pybridge(
    adata_train, epochs: int, batch_size: int, seed: int, device: str = "cpu", **train_kwargs
) -> tuple[object, dict]:
    """Train pybridge SCVI on ``device``; return (model, timings). ``train_kwargs`` go to ``train()``, with the
    precision from PYBRIDGE_BENCH_PRECISION unless given. Also bench/gpu_bench.py's."""
    setup_start = time.perf_counter()
    import pybridge

    pybridge.SCVI.setup_anndata(adata_train)
    model = pybridge.SCVI(adata_train, **MODEL_KWARGS)
    epoch_ends: list[float] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    model.train(
        max_epochs=epochs,
        batch_size=batch_size,
        train_size=1.0,
        early_stopping=False,
        accelerator=device,
        seed=seed,
        progress=lambda epoch, max_epochs, record: epoch_ends.append(time.perf_counter()),
        **{"precision": os.environ.get("PYBRIDGE_BENCH_PRECISION", "32-true"), **train_kwargs},
        **OPTIMISER_KWARGS,
    )
    end = time.perf_counter()
    return model, _timings(setup_start, start, end, time.process_time() - cpu_start, epoch_ends)


def _evaluate_pybridge(model, adata_val, adata_all) -> dict:
    # A count model's ELBO is always < 0 and its reconstruction NLL always > 0, so the signs are normalised
    # here: the core contract (positive NLLs) and scvi-tools' convention (ELBO < 0) both map to the same thing.
    elbo = model.get_elbo(adata_val)
    recon = model.get_reconstruction_error(adata_val)
    recon = recon["reconstruction_loss"] if isinstance(recon, dict) else recon
    latent = model.get_latent_representation(adata_all, give_mean=True) if adata_all is not None else None
    return {"elbo_heldout": -abs(float(elbo)), "reconstruction_heldout": abs(float(recon)), "latent": latent}


WORKERS = {
    "scvi-tools": (train_scvi_tools, _evaluate_scvi_tools, "scvi"),
    "pybridge": (train_pybridge, _evaluate_pybridge, "pybridge"),
}


def run_worker(args: argparse.Namespace) -> None:
    """Train and evaluate one tool on one dataset; write <out>/<tool>.json (and <tool>_latent.npy if labelled)."""
    import importlib

    import anndata
    import torch
    from matmul_floor import floor_seconds_per_cell
    from peak_rss import peak_rss_mib

    torch.set_num_threads(args.threads)
    train_fn, evaluate_fn, module_name = WORKERS[args.worker]
    split = np.load(args.split)
    adata = anndata.read_h5ad(args.data)
    adata_train = adata[split["train"]].copy()
    adata_val = adata[split["validation"]].copy()

    model, timings = train_fn(adata_train, args.epochs, args.batch_size, args.seed)
    results = evaluate_fn(model, adata_val, adata if "cell_type" in adata.obs else None)
    latent = results.pop("latent")
    out = Path(args.out)
    if latent is not None:
        np.save(out / f"{args.worker}_latent.npy", np.asarray(latent, dtype=np.float32))
    n_train = int(adata_train.n_obs)
    floor_per_cell = floor_seconds_per_cell(adata.n_vars, MODEL_KWARGS["n_hidden"], args.batch_size)
    results.update(
        timings,
        tool=args.worker,
        tool_version=importlib.import_module(module_name).__version__,
        torch_version=torch.__version__,
        torch_threads=torch.get_num_threads(),
        n_train=n_train,
        n_genes=int(adata.n_vars),
        n_validation=int(adata_val.n_obs),
        epochs=args.epochs,
        warm_cells_per_second=n_train * timings["warm_epochs"] / timings["warm_seconds"],
        warm_seconds_per_epoch=timings["warm_seconds"] / timings["warm_epochs"],
        floor_seconds_per_epoch=floor_per_cell * n_train,
    )
    results["floor_fraction"] = results["floor_seconds_per_epoch"] / results["warm_seconds_per_epoch"]
    results["peak_rss_mib"] = peak_rss_mib()
    (out / f"{args.worker}.json").write_text(json.dumps(results, indent=2))


# --------------------------------------------------------------------------------------------
# Parent side: datasets, split, launch workers, score, write the table.
# --------------------------------------------------------------------------------------------


def heldout_split(n_cells: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random split; the validation size follows scvi-tools (n - ceil(train_size * n))."""
    n_train = int(np.ceil((1.0 - validation_fraction) * n_cells))
    order = np.random.default_rng(seed).permutation(n_cells)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def launch(tool: str, python: Path, dataset: Path, split: Path, workdir: Path, epochs: int, args) -> dict:
    """Run one worker subprocess (a fresh process: cold imports); return its results."""
    command = [
        str(python), str(Path(__file__).resolve()), "--worker", tool, "--data", str(dataset),
        "--split", str(split), "--out", str(workdir), "--epochs", str(epochs),
        "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--threads", str(args.threads),
    ]
    # PYBRIDGE_MALLOC_TUNING: a benchmark process is ours, as the CLI's is (no effect on scvi-tools)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MPLBACKEND="Agg", PYBRIDGE_MALLOC_TUNING="1",
               PYBRIDGE_COMPILE=args.pybridge_compile, PYBRIDGE_BENCH_PRECISION=args.pybridge_precision)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.pybridge_src), str(REPO_ROOT / "bench"),
                                                      env.get("PYTHONPATH", "")]))
    log_path = workdir / f"{tool}.log"
    with open(log_path, "w") as log:
        wall_start = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        code = process.wait()
        wall = time.perf_counter() - wall_start
    if code != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{tool} failed on {dataset.name} (log {log_path}):\n{tail}")
    results = json.loads((workdir / f"{tool}.json").read_text())
    results["process_seconds"] = wall
    latent_path = workdir / f"{tool}_latent.npy"
    results["latent"] = np.load(latent_path) if latent_path.exists() else None
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


def git_commit(tree: Path) -> str:
    """The commit of the pybridge source tree measured, flagged when pybridge/ has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "pybridge"], cwd=tree, capture_output=True, text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"unknown (pybridge from {tree}, not a git checkout)"
    return commit + (" + uncommitted changes under pybridge/" if dirty else "")


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None or math.isnan(value) else format(value, spec)


def _median_rows(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (dataset, tool): the median over repeats of each timing, the first run's other fields."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["dataset"], row["tool"]), []).append(row)
    medians = {}
    for key, runs in grouped.items():
        merged = dict(runs[0])
        for field in ("train_call_seconds", "warm_seconds_per_epoch", "warm_cells_per_second",
                      "floor_seconds_per_epoch", "floor_fraction"):
            merged[field] = statistics.median(run[field] for run in runs)
        merged["runs"] = len(runs)
        medians[key] = merged
    return medians


def format_section(rows: list[dict], context: dict) -> str:
    lines = [
        RESULTS_HEADING,
        "",
        (
            f"Date: {context['date']} · commit {context['commit']} · machine: {context['machine']} · torch "
            f"{context['torch']} (both tools) · GPU: none · pybridge likelihood compile mode "
            f"PYBRIDGE_COMPILE={context['compile']} · pybridge precision {context['precision']} (scvi-tools: "
            f"32-true) · load average before/after: {context['load_before']} / "
            f"{context['load_after']}"
        ),
        "",
        (
            f"Same architecture (n_hidden 128, n_latent 10, 1 layer, ZINB, gene dispersion, dropout 0.1), batch "
            f"{context['batch_size']}, equal epochs per dataset (column), Adam lr 1e-3 / eps 0.01 / wd 1e-6, KL "
            f"warm-up 400 epochs, seed {context['seed']}, same held-out cells ({context['validation_fraction']:.0%} "
            "fixed split; each tool trains on the rest with train_size=1.0), each run in a fresh process. "
            "Produced by `bench/bench_scvi.py` in one run; timings are medians over the runs column."
        ),
        "",
        (
            "| dataset | genes | tool | train cells | epochs | runs | setup s | cold train() s | warm s/epoch "
            "| warm cells/s | floor s/epoch | floor fraction | held-out ELBO | silhouette held-out | peak RSS MiB |"
        ),
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    medians = _median_rows(rows)
    for (dataset, _), row in medians.items():
        lines.append(
            f"| {dataset} | {row['n_genes']:,} | {row['tool']} {row['tool_version']} | {row['n_train']:,} | "
            f"{row['epochs']} | {row['runs']} | {row['setup_seconds']:.1f} | {row['train_call_seconds']:.2f} | "
            f"{_fmt(row['warm_seconds_per_epoch'], '.3f')} | {_fmt(row['warm_cells_per_second'], ',.0f')} | "
            f"{row['floor_seconds_per_epoch']:.3f} | {_fmt(row['floor_fraction'], '.0%')} | "
            f"{row['elbo_heldout']:,.1f} | {_fmt(row.get('silhouette_heldout'), '.3f')} | "
            f"{row['peak_rss_mib']:,.0f} |"
        )
    lines += [
        "",
        (
            "| dataset | cold train() scvi-tools / pybridge | warm loop scvi-tools / pybridge | held-out ELBO gap "
            "(pybridge − scvi-tools) | acceptance |"
        ),
        "|---|---:|---:|---:|---|",
    ]
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        if any((dataset, tool) not in medians for tool in TOOLS):
            continue
        reference, candidate = medians[(dataset, "scvi-tools")], medians[(dataset, "pybridge")]
        cold = reference["train_call_seconds"] / candidate["train_call_seconds"]
        warm = reference["warm_seconds_per_epoch"] / candidate["warm_seconds_per_epoch"]
        gap = candidate["elbo_heldout"] - reference["elbo_heldout"]
        relative = gap / abs(reference["elbo_heldout"])
        if context["precision"] != "32-true":
            verdict = f"not judged: pybridge in {context['precision']}, scvi-tools in float32"
        elif dataset == ACCEPTANCE_DATASET:
            verdict = f"cold ≥ {COLD_SPEEDUP}×: " + ("pass" if cold >= COLD_SPEEDUP else "FAIL")
        else:
            ok = warm >= WARM_SPEEDUP and abs(relative) <= ELBO_TOLERANCE
            verdict = f"warm ≥ {WARM_SPEEDUP:.0f}× and gap ≤ {ELBO_TOLERANCE:.1%}: " + ("pass" if ok else "FAIL")
        lines.append(f"| {dataset} | {cold:.2f}× | {warm:.2f}× | {gap:+,.1f} ({relative:+.2%}) | {verdict} |")
    lines += [
        "",
        (
            "Setup = package import + setup_anndata + model construction (before train()). Cold train() = the whole "
            "first train() call in a fresh process (first-step lazy imports included). Warm = end of epoch 1 to "
            "end of the last epoch. Floor = the bare matrix products of a step (encoder n_genes→128 forward and "
            "weight gradient, two decoder heads 128→n_genes forward and both gradients, batch "
            f"{context['batch_size']}, matmul_floor.py) timed in the same process with the same threads, times "
            "the epoch's cells; floor fraction = floor s/epoch ÷ warm s/epoch (100 % = nothing but the products). "
            "ELBO = −(reconstruction NLL + KL) per held-out cell with KL weight 1 (higher is better). "
            "Acceptance (issue 12) assumes a quiet machine: warm ≥ 3× with |ELBO gap| ≤ 0.5 %, and cold train() "
            "≥ 2.5× on the ~2,000-cell × 2,000-gene set at 15 epochs."
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
    import bench_datasets

    pythons = {"scvi-tools": Path(args.scvi_python), "pybridge": Path(args.pybridge_python)}
    for tool in args.tools:
        if not pythons[tool].exists():
            hint = "run `bash bench/setup_scvi_venv.sh`" if tool == "scvi-tools" else "run `make test` or build .venv"
            raise SystemExit(f"{tool} interpreter {pythons[tool]} not found: {hint}")
    if args.acceptance:
        args.datasets, args.epochs = [ACCEPTANCE_DATASET], args.epochs or ACCEPTANCE_EPOCHS
    context = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(Path(args.pybridge_src)),
        "machine": machine_description(args.threads),
        "load_before": load_average(),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "validation_fraction": args.validation_fraction,
        "note": args.note,
        "compile": args.pybridge_compile,
        "precision": args.pybridge_precision,
    }
    bench_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scvi_") as tmp:
        for name in args.datasets:
            dataset = bench_datasets.build(name, Path(args.data_dir), Path(args.cache_dir))
            labels = bench_datasets.labels_of(dataset)
            n_cells = bench_datasets.n_cells_of(dataset)
            train, validation = heldout_split(n_cells, args.validation_fraction, args.seed)
            workdir = Path(tmp) / name
            workdir.mkdir()
            split = workdir / "split.npz"
            np.savez(split, train=train, validation=validation)
            epochs = args.epochs or DEFAULT_EPOCHS.get(name, 10)
            for repeat in range(args.repeats):
                for tool in args.tools:
                    print(f"[{time.strftime('%H:%M:%S')}] {name}: {tool} run {repeat + 1} (load {load_average()})",
                          flush=True)
                    row = launch(tool, pythons[tool], dataset, split, workdir, epochs, args)
                    latent = row.pop("latent")
                    if labels is not None and latent is not None:
                        row["silhouette_all"], row["silhouette_heldout"] = silhouettes(latent, labels, validation)
                    row.update(dataset=name, repeat=repeat, load_after=load_average())
                    rows.append(row)
                    print(json.dumps(row, default=str), flush=True)
    context["load_after"] = load_average()
    context["torch"] = ", ".join(sorted({row["torch_version"] for row in rows}))
    context["bench_seconds"] = time.perf_counter() - bench_start
    section = format_section(rows, context)
    print(section)
    print(f"benchmark wall time: {context['bench_seconds']:.0f} s")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"context": context, "rows": rows}, indent=2))
    if args.markdown_out:
        Path(args.markdown_out).write_text(section)
    if set(args.tools) == set(TOOLS) and args.write:
        write_section(Path(args.results), section)
        print(f"wrote {args.results}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=str(REPO_ROOT.parent / "shared" / "data"),
        help="folder holding zeisel_cortex.h5ad, cbmc_rna.h5ad and pbmc3k_raw.h5ad (default: ../shared/data)",
    )
    parser.add_argument(
        "--cache-dir",
        default=str(Path(tempfile.gettempdir()) / "pybridge-bench-data"),
        help="where the derived datasets (pbmc3k_hvg2000, pbmc3k_hvg2000_2k, sim100k) are built once and kept",
    )
    parser.add_argument("--datasets", nargs="+", default=DEFAULT_DATASETS)
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--epochs", type=int, default=None, help="one epoch count for all (default: per dataset)")
    parser.add_argument("--repeats", type=int, default=1, help="fresh-process runs per tool and dataset")
    parser.add_argument(
        "--acceptance", action="store_true",
        help=f"only {ACCEPTANCE_DATASET} at {ACCEPTANCE_EPOCHS} epochs (issue 12's cold train() check)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--pybridge-compile", choices=("auto", "on", "off"), default="auto",
        help="PYBRIDGE_COMPILE for pybridge's likelihood kernel (auto: the user's default; on: compiled from the "
             "first step, so the warm loop shows the compiled speed and the first epoch the compile cost)",
    )
    parser.add_argument(
        "--pybridge-precision", choices=("32-true", "bf16-mixed"), default="32-true",
        help="pybridge's train(precision=...); scvi-tools always trains in float32 here",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per tool")
    parser.add_argument("--scvi-python", default=str(REPO_ROOT / "bench" / ".venv-scvi" / "bin" / "python"))
    parser.add_argument("--pybridge-python", default=str(REPO_ROOT / ".venv" / "bin" / "python"))
    parser.add_argument(
        "--pybridge-src", default=str(REPO_ROOT),
        help="source tree whose pybridge/ is measured (default: this checkout; e.g. a `git worktree` of a commit)",
    )
    parser.add_argument("--results", default=str(REPO_ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--json-out", default=None, help="also write the raw numbers as JSON here")
    parser.add_argument("--markdown-out", default=None, help="also write the markdown section here")
    parser.add_argument(
        "--write", action="store_true", help="rewrite this benchmark's section of RESULTS.md (both tools only)"
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
