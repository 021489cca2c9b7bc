"""bench/gpu.sh's benchmark keeps working between GPU loans: its CPU dry run trains pybridge at both batch sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_dry_run_reports_both_batch_sizes(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_bench.py"), "--dry-run", "--tools", "pybridge",
         "--pybridge-kwargs", '{"precision": "bf16-mixed"}', "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    (result,) = report["results"]
    assert [run["batch_size"] for run in result["runs"]] == [128, 1024], result
    assert all(run["warm_cells_per_second"] > 0 and 0 < run["floor_fraction"] < 1 for run in result["runs"])
    assert "| pybridge" in (tmp_path / "gpu_bench.md").read_text()
