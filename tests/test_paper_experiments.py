"""scripts/paper_experiments.py: a thin wrapper over `gaptheory run` and `gaptheory table`, plus the claims."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paper_experiments.py"


def _script():
    spec = importlib.util.spec_from_file_location("paper_experiments", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: paper_tiny.toml cut to one seed and the shortest training (tests/test_experiments.py runs it whole).
SWEEP = """name = "wrapper"
kind = "training"
[fixed]
N = 8
M = 4
K = 2
n_train = 32
n_val = 16
n_test = 16
steps = 5
eval_every = 5
[grid]
seed = [0]
[[case]]
setting = "known_dictionary"
method = "sae"
[[case]]
setting = "unknown"
method = "sparse_coding"
"""


def test_the_wrapper_runs_tables_plots_and_checks_claims_and_a_rerun_computes_nothing(tmp_path, capsys):
    script = _script()
    sweep, store, figures = tmp_path / "wrapper.toml", str(tmp_path / "w.db"), tmp_path / "figures"
    sweep.write_text(SWEEP)
    assert script.main(["--sweep", str(sweep), "--store", store, "--figures", str(figures)]) == 0
    out = capsys.readouterr().out
    assert "2 tasks, 0 already done, 2 ok" in out
    assert "| known_dictionary | sae |" in out and "| unknown | sparse_coding |" in out
    assert "unknown D: sparse coding beats the SAE on code MCC" in out
    assert {p.name for p in figures.iterdir()} == {"compute_known_dictionary.png", "compute_unknown.png"}
    assert script.main(["--sweep", str(sweep), "--store", store]) == 0
    assert "2 tasks, 2 already done, 0 ok" in capsys.readouterr().out


def test_the_sizes_are_the_paper_sweeps():
    script = _script()
    assert {name: path.name for name, path in script.SWEEPS.items()} == {
        "full": "paper.toml", "quick": "paper_quick.toml", "tiny": "paper_tiny.toml"}


def _record(setting, method, test_mcc, val_mcc, refit_steps=0, **extra):
    return {"setting": setting, "method": method, "test_mcc": test_mcc, "val_mcc": val_mcc,
            "refit_steps": refit_steps, **extra}


def test_claims_name_the_per_sample_method_validation_prefers_and_read_test_scores_only():
    script = _script()
    records = [_record("known_dictionary", "sparse_coding", 0.97, 0.96),
               _record("known_dictionary", "best_subset", 0.99, 1.0),
               _record("known_dictionary", "sae", 0.70, 0.71),
               _record("known_dictionary", "mlp_32", 0.80, 0.80),
               _record("unknown", "sparse_coding", 0.90, 0.9, dict_recovery=0.9, dict_recovery_chance=0.4),
               _record("unknown", "sae", 0.60, 0.6),
               _record("unknown", "sae", 0.95, 0.6, refit_steps=100)]
    lines = script.claims(records)
    assert lines[0] == ("- [x] per-sample inference on the true D (best_subset, chosen on validation) reaches "
                        "MCC >= 0.95: 0.990")
    assert lines[2].startswith("- [x] MLP encoders beat the ReLU SAE") and "mlp_32 0.800" in lines[2]
    assert lines[3].startswith("- [x] unknown D: sparse coding beats the SAE on code MCC")
    assert lines[4].startswith("- [ ] unknown D: sparse coding also beats the SAE trained longer")  # 0.90 < 0.95
    assert lines[5].endswith("+0.500")
