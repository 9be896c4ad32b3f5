import json
import math

import numpy as np
import pytest
import torch

from gaptheory.encoders import MLPEncoder, MLPEncoderConfig, SAEConfig, SparseAutoencoder
from gaptheory.flops import FlopCount
from gaptheory.instances import make_instance
from gaptheory.experiments.methods import METHODS
from gaptheory.experiments.settings import DataConfig, build_model, make_splits, run_setting
from gaptheory.training import TrainConfig, TrainingDivergedError, train

SMALL = DataConfig(N=8, M=5, K=2, n_train=64, n_val=32, n_test=48, seed=0)


def test_splits_share_the_dictionary_and_draw_independent_codes():
    splits = make_splits(SMALL)
    np.testing.assert_array_equal(splits.X_val, splits.Z_val @ splits.D)
    np.testing.assert_array_equal(splits.X_test, splits.Z_test @ splits.D)
    assert not np.array_equal(splits.Z_val, splits.Z_test[: len(splits.Z_val)])
    again = make_splits(SMALL)
    np.testing.assert_array_equal(again.Z_test, splits.Z_test)


def test_make_splits_accepts_an_instance():
    inst = make_instance(8, 5, 2, 20, seed=3)
    splits = make_splits(inst, n_val=7, n_test=9)
    assert splits.X_train is inst.X and splits.X_val.shape == (7, 5) and splits.Z_test.shape == (9, 8)


def test_train_keeps_the_best_validation_state_and_stops_early():
    splits = make_splits(SMALL)
    sae = SparseAutoencoder(SAEConfig(M=5, N=8), seed=0)
    # A large step makes Adam overshoot, so the validation loss rises within a few steps.
    cfg = TrainConfig(steps=400, lr=0.5, eval_every=1, patience=1, progress=False)
    history = train(sae, splits.X_train, cfg, X_val=splits.X_val, device="cpu")
    assert history.stopped_early and history.steps_run < 400
    best = int(np.nanargmin(history.val_loss))
    assert history.best_step == history.steps[best]
    with torch.no_grad():
        X = torch.as_tensor(splits.X_val, dtype=torch.float32)
        Z, pre = sae.encode_with_hidden_pre(X)
        val = float(((sae.decode(Z) - X) ** 2).sum(1).mean() + sae.aux_loss(Z, pre))
    # both are float32 sums over the M entries of a row and the mean over the n_val rows, in
    # possibly different orders: they agree to twice the float32 sum bound (M + n_val) eps32
    rounding = 2 * (5 + len(splits.X_val)) * float(torch.finfo(torch.float32).eps)
    assert val == pytest.approx(history.val_loss[best], rel=rounding)


def test_train_stops_on_nan_loss_naming_step_and_learning_rate():
    inst = make_instance(8, 5, 2, 16, seed=0)
    sae = SparseAutoencoder(SAEConfig(M=5, N=8), seed=0)
    with torch.no_grad():
        sae.W_enc.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match=r"step 1 with lr=0.001"):
        train(sae, inst.X, TrainConfig(steps=5, progress=False), device="cpu")


def test_supervised_training_regresses_the_true_codes():
    splits = make_splits(SMALL)
    mlp = MLPEncoder(MLPEncoderConfig(M=5, N=8, hidden=(32,)), seed=0)
    cfg = TrainConfig(steps=60, lr=0.01, eval_every=20, progress=False)
    history = train(mlp, splits.X_train, cfg, codes=splits.Z_train, X_val=splits.X_val,
                    codes_val=splits.Z_val, device="cpu")
    assert history.val_loss[-1] < history.val_loss[0]
    with pytest.raises(ValueError, match="codes_val"):
        train(mlp, splits.X_train, cfg, codes=splits.Z_train, X_val=splits.X_val, device="cpu")


def test_train_counts_flops_of_every_step_taken():
    inst = make_instance(8, 5, 2, 16, seed=0)
    sae = SparseAutoencoder(SAEConfig(M=5, N=8), seed=0)
    history = train(sae, inst.X, TrainConfig(steps=7, batch_size=4, progress=False), device="cpu")
    assert history.flops == sae.flops(4, stage="train") * 7


@pytest.mark.parametrize(
    "setting, method",
    [(setting, method) for method, entry in METHODS.items() for setting in entry.settings],
)
def test_run_setting_returns_flat_json_scalars_for_every_method_and_setting(setting, method):
    result = run_setting(setting, method, SMALL, steps=10, seed=1, device="cpu",
                         hparams={"alpha": 0.1} if method == "sparse_coding" else None)
    record = result.to_dict()
    json.dumps(record)
    assert all(v is None or isinstance(v, (int, float, str, bool)) for v in record.values())
    assert record["metrics_split"] == "test" and record["selection_split"] == "val"
    assert 0 <= record["test_mcc"] <= 1 and record["inference_flops"] > 0
    assert (record["dict_recovery"] is None) == (setting != "unknown")
    if method in ("sparse_coding", "best_subset") and setting == "known_dictionary":
        assert record["train_flops"] == 0 and record["steps_run"] == 0


def test_run_setting_is_reproducible_on_cpu():
    first = run_setting(3, "sae", SMALL, steps=15, seed=4, device="cpu").to_dict()
    second = run_setting(3, "sae", SMALL, steps=15, seed=4, device="cpu").to_dict()
    for key in ("test_mcc", "val_mcc", "dict_recovery", "train_flops"):
        assert first[key] == second[key]


def test_per_sample_inference_on_the_true_dictionary_beats_an_untrained_sae():
    data = DataConfig(N=16, M=8, K=3, n_train=32, n_val=32, n_test=200, seed=2)
    reference = run_setting(1, "sparse_coding", data, seed=0, device="cpu", hparams={"alpha": 0.03})
    sae = run_setting(1, "sae", data, steps=1, seed=0, device="cpu")
    # the LASSO on the true D recovers K = 3 of 16 codes up to its shrinkage (MCC near 1); an
    # SAE after one step is a random encoder (MCC of random matches, well below 0.9)
    assert reference.test_mcc > 0.9 > sae.test_mcc


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"setting": 4, "method": "sae"}, "setting"),
        ({"setting": "known_codes", "method": "sparse_coding"}, "does not run in"),
        ({"setting": 1, "method": "vae"}, "not supported"),
        ({"setting": 1, "method": "sae", "hparams": {"hidden": (3,)}}, "do not apply"),
    ],
)
def test_run_setting_rejects_unknown_settings_methods_and_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_setting(data=SMALL, steps=1, device="cpu", **kwargs)


def test_build_model_parses_mlp_widths_and_topk_default():
    assert build_model("mlp_4_6", 8, 5, 2).cfg.hidden == (4, 6)
    assert build_model("sae_topk", 8, 5, 2).cfg.K == 2
    exact = build_model("best_subset", 8, 5, 2).cfg
    assert (exact.architecture, exact.inference, exact.K) == ("sparse_coding", "best_subset", 2)


def test_exact_per_sample_inference_recovers_every_code_on_the_true_dictionary():
    data = DataConfig(N=16, M=8, K=3, n_train=32, n_val=32, n_test=100, seed=3)
    result = run_setting(1, "best_subset", data, seed=0, device="cpu")
    # K = 3 < spark/2 on a generic D: exact recovery (Donoho & Elad 2003), codes equal up to
    # least-squares round-off, so each matched correlation is 1 - O(eps)
    assert result.test_mcc > 1 - 1e-9 and result.test_f1 == 1.0
    assert result.train_flops == 0 and result.inference_flops_per_sample > 0


@pytest.mark.parametrize("bad", [{"steps": -1}, {"lr": 0.0}, {"batch_size": 0}, {"patience": 0}])
def test_train_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


@pytest.mark.slow
def test_paper_size_known_dictionary_gap():
    """Paper size, one seed: per-sample inference on the true D beats the ReLU SAE by 0.2."""
    data = DataConfig(seed=0)
    reference = run_setting(1, "sparse_coding", data, seed=0, device="cpu", hparams={"alpha": 0.01})
    sae = run_setting(1, "sae", data, steps=2000, seed=0, device="cpu")
    assert reference.test_mcc >= 0.95 and reference.test_mcc - sae.test_mcc >= 0.2
    assert math.isfinite(sae.train_flops)


class _ClosedFormSAE(SparseAutoencoder):
    """An SAE whose unsupervised step sets W_enc in closed form (to the decoder's transpose)."""

    def closed_form_step_(self, X):
        with torch.no_grad():
            self.W_enc.copy_(2 * self.W_dec.T)
        return torch.tensor(float(len(X))), FlopCount()


def test_train_takes_a_models_closed_form_step_instead_of_the_gradient_step():
    inst = make_instance(16, 8, 3, 48, seed=0)
    model = _ClosedFormSAE(SAEConfig(M=8, N=16), seed=0)
    W_dec = model.W_dec.detach().clone()
    history = train(model, inst.X, TrainConfig(steps=5, eval_every=5, batch_size=16, progress=False), device="cpu")
    # Adam never stepped: W_dec was only renormalised, which moves unit rows of M = 8 entries
    # by a few float32 roundings, (M + 2) eps32; W_enc = 2 W_dec^T was set before that
    renormalised = (8 + 2) * float(torch.finfo(torch.float32).eps)
    assert torch.allclose(model.W_dec.detach(), W_dec, rtol=0, atol=renormalised)
    assert torch.allclose(model.W_enc.detach(), 2 * W_dec.T, rtol=0, atol=2 * renormalised)
    assert history.train_loss.tolist() == [16.0] and history.steps_run == 5
    supervised = _ClosedFormSAE(SAEConfig(M=8, N=16), seed=0)  # with codes the hook is skipped
    train(supervised, inst.X, TrainConfig(steps=5, progress=False), codes=inst.Z, device="cpu")
    assert not torch.equal(supervised.W_enc.detach(), 2 * supervised.W_dec.detach().T)


@pytest.mark.parametrize("fit", [False, True])
def test_train_counts_the_mlp_data_initialisation_once(fit):
    from gaptheory.encoders import mlp_output_init_flops

    inst = make_instance(8, 5, 2, 16, seed=0)
    cfg = MLPEncoderConfig(M=5, N=8, hidden=(12,), fit_output_to_decoder=fit)
    mlp = MLPEncoder(cfg, seed=0).fix_decoder(inst.D)
    history = train(mlp, inst.X, TrainConfig(steps=3, batch_size=4, progress=False), device="cpu")
    init = mlp_output_init_flops(16, (5, 12, 8), fit=fit, center=True)
    assert init.matmul > 0
    assert history.flops == init + mlp.flops(4, stage="train") * 3
    again = train(mlp, inst.X, TrainConfig(steps=3, batch_size=4, progress=False), device="cpu")  # already initialised
    assert again.flops == mlp.flops(4, stage="train") * 3


def test_mlp_data_initialisation_on_a_row_subset_costs_and_uses_only_those_rows():
    from gaptheory.encoders import mlp_output_init_flops

    inst = make_instance(8, 5, 2, 64, seed=0)
    cfg = MLPEncoderConfig(M=5, N=8, hidden=(12,), fit_output_to_decoder=True, init_rows=16)
    mlp = MLPEncoder(cfg, seed=0).fix_decoder(inst.D)
    assert mlp.flops(64, stage="init") == mlp_output_init_flops(16, (5, 12, 8), fit=True, center=True)
    history = train(mlp, inst.X, TrainConfig(steps=2, batch_size=8, progress=False), device="cpu")
    assert history.flops == mlp.flops(64, stage="init") + mlp.flops(8, stage="train") * 2
    # the output bias is centred on the drawn subset of rows, not on all of them
    centred = MLPEncoder(MLPEncoderConfig(M=5, N=8, hidden=(12,), init_rows=16), seed=0)
    X = torch.as_tensor(inst.X, dtype=torch.float32)
    rows = torch.randperm(64, generator=torch.Generator().set_state(centred._generator.get_state()))[:16]
    hidden = torch.relu(X[rows] @ centred.weights[0] + centred.biases[0])
    expected = -(hidden @ centred.weights[1]).median(0).values
    with torch.no_grad():
        centred.init_from_data(X)
    torch.testing.assert_close(centred.biases[1].detach(), expected.detach())
    with pytest.raises(ValueError, match="init_rows"):
        MLPEncoderConfig(M=5, N=8, init_rows=0)
