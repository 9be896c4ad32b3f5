"""scripts/gap_at_scale.py on a small instance: every latent solved, checked exactly and counted."""

import importlib.util
import json
from pathlib import Path

import numpy as np

from gaptheory.gap import relu_minimax_gap
from gaptheory.instances import random_dictionary

_path = Path(__file__).resolve().parents[1] / "scripts" / "gap_at_scale.py"
_spec = importlib.util.spec_from_file_location("gap_at_scale", _path)
gap_at_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gap_at_scale)


def test_the_report_matches_the_call_it_times(capsys):
    gap_at_scale.main(["--N", "40", "--M", "20", "--K", "2", "--seed", "3"])
    report = json.loads(capsys.readouterr().out)
    result = relu_minimax_gap(random_dictionary(40, 20, seed=3), 2)
    assert report["success"] and report["exact"] == int(result.exact.sum())
    assert report["eps"] == [float(np.min(result.eps)), float(np.median(result.eps)), float(np.max(result.eps))]
    assert sum(report["reasons"].values()) == 40
    assert report["certified_min"] <= report["eps"][0] + 1e-9
    assert report["code_MB"] > 0 and report["solve_s"] > 0 and report["verify_s"] > 0
