"""The issue-4 script's reporting path: records -> table, claims, figures (no long training)."""

import importlib.util
import json
from pathlib import Path

from gaptheory.experiments.settings import DataConfig, run_setting
from gaptheory.training import TrainConfig

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paper_experiments.py"


def _script():
    spec = importlib.util.spec_from_file_location("paper_experiments", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_from_records_checks_claims_against_the_selected_per_sample_method(tmp_path, capsys):
    script = _script()
    data = DataConfig(N=16, M=8, K=3, n_train=64, n_val=64, n_test=64, seed=0)
    quick = TrainConfig(steps=5, progress=False)
    records = [run_setting(1, "sparse_coding", data, device="cpu", hparams={"alpha": 0.01}).to_dict(),
               run_setting(1, "best_subset", data, device="cpu").to_dict(),
               run_setting(1, "sae", data, device="cpu", train_cfg=quick).to_dict()]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert script.main(["--from-records", str(path), "--figures", str(tmp_path / "figures")]) == 0
    out = capsys.readouterr().out
    assert "| known_dictionary | best_subset |" in out
    # validation prefers exact inference (MCC 1 on every row) to the LASSO, and the claim says so
    assert "- [x] per-sample inference on the true D (best_subset, chosen on validation)" in out
    assert "(the l1 relaxation alone, LASSO per sample" in out
    assert (tmp_path / "figures" / "issue4_compute_known_dictionary.png").stat().st_size > 0


def test_every_planned_grid_exists_and_tunes_the_learning_rate_of_amortised_methods():
    script = _script()
    for setting, method, grid, kind in script.PLAN:
        if grid in ("selected", "ito"):
            continue
        points = script.GRIDS[grid]
        assert points, (setting, method)
        if kind == "amortised":
            assert {p["lr"] for p in points} == set(script.LR_GRID), (setting, method)
