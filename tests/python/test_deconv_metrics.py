"""Deconvolution metrics against values computed by hand, and the accuracy-score ranking."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pybridge.deconvolution import accuracy_score, deconvolution_metrics, summarize_metrics
from pybridge.errors import PybridgeError

TRUE = pd.DataFrame([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], index=["s0", "s1", "s2"], columns=["A", "B"])
PRED = pd.DataFrame([[0.8, 0.2], [0.5, 0.5], [0.2, 0.8]], index=["s0", "s1", "s2"], columns=["A", "B"])


def test_per_cell_type_metrics_match_hand_computation():
    per_type = deconvolution_metrics(TRUE, PRED)["per_cell_type"]
    a = per_type.loc["A"]
    assert a["pearson"] == pytest.approx(1.0)
    assert a["rmse"] == pytest.approx(math.sqrt((0.04 + 0.0 + 0.04) / 3))
    # SSIM: x = [1, .5, 0] (max 1), y = [.8, .5, .2] / .8 = [1, .625, .25]
    mx, my = 0.5, 0.625
    vx, vy, cov = 0.5**2 * 2 / 3, 0.375**2 * 2 / 3, 0.5 * 0.375 * 2 / 3
    c1, c2 = 0.01**2, 0.03**2
    ssim = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert a["ssim"] == pytest.approx(ssim, rel=1e-9)
    assert a["ssim"] == pytest.approx(0.93673, abs=1e-5)
    # JS: P = [2/3, 1/3, 0], Q = [8/15, 5/15, 2/15], M = [3/5, 1/3, 1/15]
    kl_pm = (2 / 3) * math.log((2 / 3) / 0.6)
    kl_qm = (8 / 15) * math.log((8 / 15) / 0.6) + (2 / 15) * math.log((2 / 15) / (1 / 15))
    jsd_nats = 0.5 * (kl_pm + kl_qm)
    assert a["js_distance"] == pytest.approx(math.sqrt(jsd_nats), rel=1e-9)
    assert a["js_divergence"] == pytest.approx(jsd_nats / math.log(2), rel=1e-9)
    assert a["js_divergence"] == pytest.approx(0.072022, abs=1e-6)
    assert a["aupr"] == pytest.approx(1.0)  # both present spots score above the absent one
    # B mirrors A
    np.testing.assert_allclose(per_type.loc["B"].to_numpy(), a.to_numpy())


def test_per_spot_metrics_and_undefined_values():
    per_spot = deconvolution_metrics(TRUE, PRED)["per_spot"]
    assert per_spot.loc["s0", "rmse"] == pytest.approx(0.2)
    assert per_spot.loc["s0", "pearson"] == pytest.approx(1.0)
    assert per_spot.loc["s0", "aupr"] == pytest.approx(1.0)
    assert math.isnan(per_spot.loc["s1", "pearson"])  # a constant truth has no correlation
    assert per_spot.loc["s1", "rmse"] == 0.0 and per_spot.loc["s1", "js_divergence"] == pytest.approx(0.0)
    summary = summarize_metrics(deconvolution_metrics(TRUE, PRED))
    assert summary["spot_pearson"] == pytest.approx(1.0)  # NaN of s1 skipped


def test_aupr_penalises_a_missed_type():
    true = pd.DataFrame([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], columns=["A", "B"])
    pred = pd.DataFrame([[0.1, 0.9], [0.6, 0.4], [0.5, 0.5]], columns=["A", "B"])
    # for A: present at rows 0 and 2, scores .1, .6, .5 -> ranking: row1 (absent), row2 (present), row0 (present)
    # precision at recall .5 = 1/2, at recall 1 = 2/3 -> AP = .5 * .5 + .5 * 2/3
    per_type = deconvolution_metrics(true, pred)["per_cell_type"]
    assert per_type.loc["A", "aupr"] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_predictions_aligned_by_name_and_missing_type_refused():
    shuffled = PRED.loc[["s2", "s0", "s1"], ["B", "A"]].assign(noise_term=0.0)
    a = deconvolution_metrics(TRUE, shuffled)["per_cell_type"]
    b = deconvolution_metrics(TRUE, PRED)["per_cell_type"]
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(PybridgeError, match="lack cell types"):
        deconvolution_metrics(TRUE, PRED[["A"]])


def test_accuracy_score_ranks_methods():
    summaries = pd.DataFrame(
        {"celltype_pearson": [0.9, 0.5, 0.7], "celltype_rmse": [0.1, 0.3, 0.2]}, index=["good", "bad", "mid"]
    )
    score = accuracy_score(summaries)
    assert score.to_dict() == pytest.approx({"good": 1.0, "bad": 1 / 3, "mid": 2 / 3})
    mixed = pd.DataFrame({"pearson": [0.9, 0.5], "rmse": [0.3, 0.1]}, index=["x", "y"])
    assert accuracy_score(mixed).to_dict() == pytest.approx({"x": 0.75, "y": 0.75})
