import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.encoders import (
    CONFIG_FILENAME,
    ENCODERS,
    WEIGHTS_FILENAME,
    Encoder,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    MLPEncoder,
    MLPEncoderConfig,
    SAEConfig,
    SAEITOConfig,
    SAEWithITO,
    SparseAutoencoder,
    SparseCoding,
    SparseCodingConfig,
    TopKSAE,
    TopKSAEConfig,
    least_squares_update_flops,
)
from gaptheory.flops import FlopCount, best_subset_flops, encoder_flops, fista_flops, training_step_flops
from gaptheory.metrics import dictionary_recovery
from gaptheory.instances import make_instance
from gaptheory.solvers import lasso
from gaptheory.training import TrainConfig, train

from conftest import half_square_atol, lasso_code_atol, least_squares_atol, sum_atol

#: A float32 row of M = 8 entries normalised to unit norm: its norm is an M-term sum, a
#: square root and a division away from 1, so within (M + 2) eps32 (Higham 2002, sec. 3.1).
NORM_ATOL = sum_atol(8 + 2, 1.0, np.float32)

QUICK = TrainConfig(steps=30, eval_every=10, progress=False)


def _models(M=8, N=16):
    return [
        SparseAutoencoder(SAEConfig(M=M, N=N), seed=1),
        TopKSAE(TopKSAEConfig(N=N, M=M, K=3), seed=1),
        JumpReLUSAE(JumpReLUSAEConfig(N=N, M=M), seed=1),
        MLPEncoder(MLPEncoderConfig(M=M, N=N, hidden=(12, 7)), seed=1),
        SAEWithITO(SAEITOConfig(M=M, N=N), seed=1),
        SparseCoding(SparseCodingConfig(M=M, N=N, alpha=0.1, fit_max_iter=50), seed=1),
        SparseCoding(SparseCodingConfig(M=M, N=N, inference="best_subset", K=3), seed=1),
    ]


@pytest.mark.parametrize("model", _models(), ids=lambda m: f"{type(m).__name__}-{m.cfg.architecture}")
def test_every_encoder_trains_and_keeps_unit_norm_decoder_rows(model):
    inst = make_instance(16, 8, 3, 64, seed=0)
    history = train(model, inst.X, QUICK, device="cpu")
    norms = model.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), rtol=0, atol=NORM_ATOL)
    Z = model.encode(inst.X)
    assert Z.shape == (64, 16) and Z.dtype == np.float64 and np.isfinite(Z).all()
    assert model.decode(Z).shape == (64, 8)
    assert history.steps_run == QUICK.steps


def test_sae_weights_have_saelens_shapes_and_relu_encoder_formula():
    sae = SparseAutoencoder(SAEConfig(M=5, N=11), seed=0)
    assert tuple(sae.W_enc.shape) == (5, 11) and tuple(sae.W_dec.shape) == (11, 5)
    assert tuple(sae.b_enc.shape) == (11,) and tuple(sae.b_dec.shape) == (5,)
    X = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.fill_(-0.1)
    assert torch.equal(sae.encode(X), torch.relu(X @ sae.W_enc + sae.b_enc))


def test_topk_keeps_at_most_k_active_latents():
    sae = TopKSAE(TopKSAEConfig(N=16, M=8, K=2), seed=0)
    Z = sae.encode(np.random.default_rng(0).standard_normal((50, 8)))
    assert ((Z > 0).sum(1) <= 2).all()


def test_jumprelu_threshold_learns_from_the_l0_penalty():
    inst = make_instance(16, 8, 3, 64, seed=0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(N=16, M=8, l0_coefficient=1.0), seed=0)
    before = sae.threshold.detach().clone()
    train(sae, inst.X, QUICK, device="cpu")
    assert not torch.equal(before, sae.threshold.detach())
    Z = sae.encode(inst.X)
    assert ((Z == 0) | (Z > sae.threshold.detach().numpy())).all()


def test_same_seed_gives_identical_training_on_cpu():
    inst = make_instance(16, 8, 3, 64, seed=0)
    cfg = TrainConfig(steps=20, batch_size=16, progress=False)
    a, b = (MLPEncoder(MLPEncoderConfig(M=8, N=16, hidden=(8,)), seed=3) for _ in range(2))
    train(a, inst.X, cfg, device="cpu")
    train(b, inst.X, cfg, device="cpu")
    np.testing.assert_array_equal(a.encode(inst.X), b.encode(inst.X))


def test_fix_decoder_freezes_the_true_dictionary_during_training():
    inst = make_instance(16, 8, 3, 64, seed=0)
    sae = SparseAutoencoder(SAEConfig(M=8, N=16), seed=0).fix_decoder(inst.D)
    train(sae, inst.X, QUICK, device="cpu")
    # the float32 copy of unit rows (|entries| <= 1), renormalised in float32
    np.testing.assert_allclose(sae.W_dec.detach().numpy(), inst.D, rtol=0, atol=NORM_ATOL)
    assert not sae.decoder_trainable


def test_ito_is_warm_started_from_the_sae_codes_and_solves_the_same_lasso():
    inst = make_instance(16, 8, 3, 40, seed=2)
    model = SAEWithITO(SAEITOConfig(M=8, N=16, ito_alpha=0.05), seed=0).fix_decoder(inst.D)
    train(model, inst.X, QUICK, device="cpu")
    Z, flops = model.encode_with_flops(inst.X)
    cold = lasso(inst.X, inst.D, 0.05, nonnegative=True, method="fista", return_info=True)
    # both within their certified duality gaps of the same minimiser (on the float64 D)
    assert (np.abs(Z - cold.codes).max(1) <= lasso_code_atol(inst.X, inst.D, 0.05, True, Z, cold.codes)).all()
    sae_codes = model.encode_with_hidden_pre(torch.as_tensor(inst.X, dtype=torch.float32))[0].detach()
    warm = lasso(inst.X, model.decoder_float64(), 0.05, nonnegative=True, method="fista",
                 init=sae_codes.double().numpy(), return_info=True)
    assert flops == encoder_flops(40, (8, 16)) + fista_flops(warm.n_iter, N=16, M=8)


def test_sparse_coding_on_the_true_dictionary_recovers_codes():
    inst = make_instance(16, 8, 2, 50, seed=4, kind="identity_dct")
    alpha = 1e-3
    model = SparseCoding(SparseCodingConfig(M=8, N=16, alpha=alpha), seed=0).fix_decoder(inst.D)
    Z = model.encode(inst.X)
    exact = lasso(inst.X, inst.D, alpha, nonnegative=True)
    assert (np.abs(Z - exact).max(1) <= lasso_code_atol(inst.X, inst.D, alpha, True, Z, exact)).all()
    # On the true support S the LASSO optimum is z_S - alpha G_SS^-1 1 (positive codes):
    # the codes are recovered up to that shrinkage, which is at most alpha ||G_SS^-1||_inf.
    np.testing.assert_array_equal(exact != 0, inst.Z != 0)
    shrinkage = max(np.abs(np.linalg.inv(inst.D[z != 0] @ inst.D[z != 0].T)).sum(1).max() for z in inst.Z)
    assert np.abs(exact - inst.Z).max() <= alpha * shrinkage + least_squares_atol(inst.D, inst.Z)


def test_best_subset_sparse_coding_on_the_true_dictionary_is_exact_and_counts_its_flops():
    inst = make_instance(16, 8, 3, 50, seed=4)  # K = 3 < spark/2 = 4.5: every code is the unique sparsest fit
    model = SparseCoding(SparseCodingConfig(M=8, N=16, inference="best_subset", K=3), seed=0).fix_decoder(inst.D)
    Z, flops = model.encode_with_flops(inst.X)
    # least squares on the true support with float32-rounded atoms
    np.testing.assert_allclose(Z, inst.Z, rtol=0, atol=least_squares_atol(inst.D, inst.Z, np.float32))
    assert flops == best_subset_flops(50, N=16, M=8, K=3)
    assert float(model.aux_loss(torch.as_tensor(Z), None)) == 0.0  # sparsity is a constraint, not a penalty


def test_sparse_coding_config_needs_K_for_best_subset_inference():
    with pytest.raises(ValueError, match="needs K"):
        SparseCodingConfig(M=8, N=16, inference="best_subset")
    with pytest.raises(ValueError, match=r"K=9 must be <= min\(N, M\)=8"):
        SparseCodingConfig(M=8, N=16, inference="best_subset", K=9)
    with pytest.raises(ValueError, match="inference"):
        SparseCodingConfig(M=8, N=16, inference="omp")


def test_sparse_coding_learns_the_dictionary_with_decoder_updates():
    inst = make_instance(16, 8, 3, 64, seed=0)
    model = SparseCoding(SparseCodingConfig(M=8, N=16, alpha=0.1, fit_max_iter=50), seed=0)
    before = model.W_dec.detach().clone()
    history = train(model, inst.X, TrainConfig(steps=3, lr=0.01, progress=False), device="cpu")
    assert not torch.equal(before, model.W_dec.detach())
    assert history.flops.total > 0


def _sparse_coding(alpha=0.1, **options):
    return SparseCoding(SparseCodingConfig(M=8, N=16, alpha=alpha, fit_max_iter=50, **options), seed=0)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 1000))
def test_least_squares_update_never_raises_the_reconstruction_error_of_the_codes(seed):
    # MOD minimises ||X - Z D||^2 over D for fixed Z; the row renormalisation rescales the
    # cached codes inversely, so the same codes reconstruct X at least as well afterwards.
    inst = make_instance(16, 8, 3, 96, seed=seed)
    model = _sparse_coding(resample_dead=False)
    X = torch.as_tensor(inst.X, dtype=torch.float32)
    Z = model.encode_for_training(X, rows="train")[0]
    model._training_solve = lambda X, rows: (Z, None, FlopCount(), False)  # hold the codes fixed: test the update alone
    W_before = model.W_dec.detach().clone()
    before = ((Z @ model.W_dec - X) ** 2).sum(1).mean()
    loss, _ = model.closed_form_step_(X)
    Z_after = model.warm_codes_["train"][1]
    after = ((Z_after @ model.W_dec - X) ** 2).sum(1).mean()
    # both are float32 evaluations of the mean squared residual (twice the half square)
    roundoff = 2 * (half_square_atol(X, Z.detach(), W_before, np.float32).mean()
                    + half_square_atol(X, Z_after.detach(), model.W_dec.detach(), np.float32).mean())
    assert after <= before + roundoff
    # the same float32 loss summed in another order: (N + M + B) eps32 relative
    rtol = sum_atol(16 + 8 + 96, 1.0, np.float32)
    assert torch.isclose(loss, before + 2 * 0.1 * Z.abs().sum(1).mean(), rtol=rtol, atol=0)
    assert torch.allclose(model.W_dec.norm(dim=1), torch.ones(16), rtol=0, atol=NORM_ATOL)


def test_least_squares_update_resamples_an_atom_no_row_uses():
    inst = make_instance(16, 8, 3, 64, seed=1)
    model = _sparse_coding()
    X = torch.as_tensor(inst.X, dtype=torch.float32)
    with torch.no_grad():  # nonnegative codes never use an atom pointing against every row
        model.W_dec[0] = -X.mean(0) / X.mean(0).norm()
    assert (model.encode_with_hidden_pre(X)[0][:, 0] == 0).all()
    model.warm_codes_.clear()
    model.closed_form_step_(X)
    atom = model.W_dec[0].detach()
    assert torch.isclose(atom.norm(), torch.tensor(1.0), rtol=0, atol=NORM_ATOL)
    assert (X @ atom).max() > 0  # moved to a direction some row has
    assert torch.equal(_sparse_coding(resample_dead=False).closed_form_step_(X)[0] * 0, torch.tensor(0.0))


def test_sparse_coding_initialises_atoms_at_normalised_training_rows():
    inst = make_instance(16, 8, 3, 40, seed=2)
    model = _sparse_coding()
    X = torch.as_tensor(inst.X, dtype=torch.float32)
    model.init_from_data(X)
    rows = X / X.norm(dim=1, keepdim=True)
    similarity = model.W_dec.detach() @ rows.T  # (16, 40)
    # the dot product of two float32 unit rows: their norms' errors plus an M-term sum
    assert torch.allclose(similarity.max(1).values, torch.ones(16), rtol=0, atol=3 * NORM_ATOL)
    assert len(set(similarity.argmax(1).tolist())) == 16  # distinct rows
    untouched = _sparse_coding(init_from_samples=False)
    before = untouched.W_dec.detach().clone()
    untouched.init_from_data(X)
    assert torch.equal(before, untouched.W_dec.detach())


def test_least_squares_dictionary_learning_beats_adam_from_random_atoms_at_equal_steps():
    # The default (MOD from data samples) against Adam from random atoms.
    inst = make_instance(16, 8, 3, 256, seed=0)
    cfg = TrainConfig(steps=40, lr=0.01, eval_every=40, progress=False)
    scores = {}
    for options in ({}, {"dictionary_update": "gradient", "init_from_samples": False}):
        model = _sparse_coding(**options)
        history = train(model, inst.X, cfg, device="cpu")
        assert history.train_loss.size and np.isfinite(history.train_loss).all()
        scores[bool(options)] = dictionary_recovery(inst.D, model.decoder_float64(), n_chance=1).score
    assert scores[False] > scores[True]


def test_least_squares_update_accumulates_statistics_over_minibatches():
    inst = make_instance(16, 8, 3, 96, seed=3)
    model = _sparse_coding()
    train(model, inst.X, TrainConfig(steps=6, batch_size=32, progress=False), device="cpu")
    A, B, count = model.statistics_
    assert count == 2 and A.shape == (16, 16) and B.shape == (16, 8)  # window: 4 rows per atom = 2 batches
    longer = _sparse_coding(statistics_window=100)
    train(longer, inst.X, TrainConfig(steps=6, batch_size=32, progress=False), device="cpu")
    assert longer.statistics_[2] == 6 and not torch.equal(longer.W_dec, model.W_dec)
    full = _sparse_coding()
    train(full, inst.X, TrainConfig(steps=6, progress=False), device="cpu")
    assert full.statistics_[2] == 1  # full batch: only the current codes count


def test_least_squares_update_flops_count_the_update_and_the_fista_iterations():
    inst = make_instance(16, 8, 3, 64, seed=0)
    model = _sparse_coding()
    _, step = model.closed_form_step_(torch.as_tensor(inst.X, dtype=torch.float32))
    assert step.total > least_squares_update_flops(64, 16, 8).total > 0
    solve = step.total - model.flops(64, stage="train").total  # the inner FISTA: 1 to fit_max_iter=50 iterations a row
    assert fista_flops(np.ones(64), N=16, M=8).total <= solve <= fista_flops(np.full(64, 50), N=16, M=8).total
    assert least_squares_update_flops(128, 16, 8).matmul > least_squares_update_flops(64, 16, 8).matmul


def test_sparse_coding_config_rejects_an_unknown_dictionary_update():
    with pytest.raises(ValueError, match="dictionary_update"):
        SparseCodingConfig(M=8, N=16, dictionary_update="ksvd")
    with pytest.raises(ValueError, match="statistics_window"):
        SparseCodingConfig(M=8, N=16, statistics_window=0)


@settings(max_examples=6, deadline=None)
@given(index=st.integers(0, len(_models()) - 1), seed=st.integers(0, 1000))
def test_save_load_round_trip_preserves_weights_config_and_codes(tmp_path_factory, index, seed):
    model = _models()[index]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    model.normalize_decoder_()
    path = model.save(tmp_path_factory.mktemp("enc"))
    cfg = json.loads((path / CONFIG_FILENAME).read_text())
    assert (path / WEIGHTS_FILENAME).exists()
    assert cfg["d_in"] == 8 and cfg["d_sae"] == 16 and cfg["architecture"] == model.cfg.architecture
    loaded = Encoder.load(path, device="cpu")
    assert type(loaded) is type(model) and loaded.cfg == model.cfg
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])
    X = make_instance(16, 8, 3, 5, seed=seed).X
    np.testing.assert_array_equal(loaded.encode(X), model.encode(X))  # bit-equal weights, same arithmetic


def test_load_refuses_a_different_encoder_class(tmp_path):
    MLPEncoder(MLPEncoderConfig(M=4, N=6), seed=0).save(tmp_path)
    with pytest.raises(ValueError, match="not a SparseAutoencoder"):
        SparseAutoencoder.load(tmp_path)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: JumpReLUSAEConfig(N=16, M=8, bandwidth=0.0), "bandwidth"),
        (lambda: TopKSAEConfig(N=16, M=8, K=0), "K=0"),
        (lambda: TopKSAEConfig(N=16, M=8, K=17), "K=17"),
        (lambda: SAEConfig(M=0, N=16), "M=0"),
        (lambda: SAEConfig(M=8, N=16, l1_coefficient=-1.0), "l1_coefficient"),
        (lambda: MLPEncoderConfig(M=8, N=16, hidden=(0,)), "hidden"),
        (lambda: SparseCodingConfig(M=8, N=16, alpha=0.0), "alpha"),
        (lambda: SAEConfig.from_dict({"M": 8, "N": 16, "width": 3}), "unknown keys"),
        (lambda: SAEConfig.from_dict({"M": 8, "N": 16, "architecture": "topk"}), "does not match"),
    ],
)
def test_configs_reject_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_config_round_trips_through_dict():
    for cfg in (TopKSAEConfig(N=16, M=8, K=2), JumpReLUSAEConfig(N=16, M=8), MLPEncoderConfig(M=3, N=5, hidden=(4, 4)),
                SAEITOConfig(M=8, N=16), SparseCodingConfig(M=8, N=16)):
        assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("bad, match", [(np.ones((3, 5)), "M=8"), (np.full((2, 8), np.nan), "NaN")])
def test_encode_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        SparseAutoencoder(SAEConfig(M=8, N=16)).encode(bad)


def test_mlp_output_bias_centring_leaves_no_latent_dead_at_initialisation():
    inst = make_instance(16, 8, 3, 256, seed=0)
    X = torch.as_tensor(inst.X, dtype=torch.float32)
    mlp = MLPEncoder(MLPEncoderConfig(M=8, N=16, hidden=(256,)), seed=0)
    mlp.init_from_data(X)
    active = (mlp.encode(X) > 0).float().mean(0)
    # a mean of 256 zeros and ones is exact in float32; centring on the median leaves at most
    # the one row on the median (pre-activation 0, so inactive) off: 1/256
    assert torch.allclose(active, torch.full_like(active, 0.5), rtol=0, atol=1 / 256)
    plain = MLPEncoder(MLPEncoderConfig(M=8, N=16, hidden=(256,), center_output_bias=False), seed=0)
    plain.init_from_data(X)
    assert torch.equal(plain.biases[-1], MLPEncoder(plain.cfg, seed=0).biases[-1])


@pytest.mark.parametrize("width", [32, 256])
def test_mlp_output_fit_starts_every_latent_on_its_atom_projection(width):
    inst = make_instance(16, 8, 3, 256, seed=1)
    X = torch.as_tensor(inst.X, dtype=torch.float32)
    target = X @ torch.as_tensor(inst.D, dtype=torch.float32).T  # the SAE start W_enc = D^T, (B, N)

    def correlations(fit):
        cfg = MLPEncoderConfig(M=8, N=16, hidden=(width,), fit_output_to_decoder=fit)
        mlp = MLPEncoder(cfg, seed=0).fix_decoder(inst.D)
        mlp.init_from_data(X)
        with torch.no_grad():
            Z, pre = mlp.encode_with_hidden_pre(X)
        both = torch.stack([pre.T, target.T], 1)  # (N, 2, B)
        return torch.stack([torch.corrcoef(pair)[0, 1] for pair in both]), (Z > 0).float().mean(0)

    fitted, active = correlations(True)
    random_start, _ = correlations(False)
    # every latent's fitted start tracks its atom projection better than any random start does
    assert fitted.min() > random_start.abs().max()
    assert torch.allclose(active, torch.full_like(active, 0.5), rtol=0, atol=1 / 256)  # still median-centred


def _saved_sae(tmp_path):
    return SparseAutoencoder(SAEConfig(M=8, N=16), seed=0).save(tmp_path / "sae")


def test_load_refuses_a_cfg_asking_for_more_than_the_weights_file_holds_before_allocating(tmp_path):
    folder = _saved_sae(tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["gaptheory"]["config"].update(M=10**6, N=10**6)  # 4 TB in float32 if allocated
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not belong together"):
        Encoder.load(folder)


def test_load_refuses_nan_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _saved_sae(tmp_path)
    tensors = load_file(str(folder / "sae_weights.safetensors"))
    tensors["W_enc"][0, 0] = float("nan")
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match="NaN or inf"):
        Encoder.load(folder)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_load_names_a_corrupt_weights_file(tmp_path, damage):
    folder = _saved_sae(tmp_path)
    weights = folder / "sae_weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * len(data))
    with pytest.raises(ValueError, match="sae_weights.safetensors"):
        Encoder.load(folder)


@pytest.mark.parametrize("bad,error,match", [
    (torch.full((2, 8), float("nan")), ValueError, "NaN"),
    (torch.ones(2, 8, dtype=torch.complex64), TypeError, "real"),
    (torch.ones(2, 7), ValueError, "M=8"),
    (np.ones((2, 8)) * 1e200, ValueError, "rescale X"),
    (torch.ones(2, 8, dtype=torch.float64) * 1e200, ValueError, "rescale X"),
    (np.vstack([np.ones(8), np.full(8, 1e-30)]), ValueError, "1 row.*flush"),
])
def test_encode_validates_tensors_and_arrays_alike(bad, error, match):
    with pytest.raises(error, match=match):
        SparseAutoencoder(SAEConfig(M=8, N=16), seed=0).encode(bad)


def test_encode_keeps_rows_of_zeros_and_of_small_but_representable_entries():
    model = SparseAutoencoder(SAEConfig(M=8, N=16), seed=0)
    # 1e-18 > sqrt(float32 tiny) ~ 1.1e-19: the products stay normal floats
    Z = model.encode(np.vstack([np.zeros(8), np.full(8, 1e-18), np.ones(8)]))
    assert Z.shape == (3, 16) and np.isfinite(Z).all()


def test_decode_refuses_nan_tensor_codes():
    with pytest.raises(ValueError, match="Z contains NaN"):
        SparseAutoencoder(SAEConfig(M=8, N=16), seed=0).decode(torch.full((2, 16), float("nan")))


def test_registry_maps_every_architecture_name_to_its_class():
    assert {name: cls.__name__ for name, cls in ENCODERS.items()} == {
        "standard": "SparseAutoencoder", "topk": "TopKSAE", "jumprelu": "JumpReLUSAE", "sae_ito": "SAEWithITO",
        "mlp": "MLPEncoder", "sparse_coding": "SparseCoding"}
    assert all(cls.config_class.architecture == name for name, cls in ENCODERS.items())


def test_config_fields_start_with_N_then_M_like_random_dictionary():
    import dataclasses

    for cls in ENCODERS.values():
        assert [f.name for f in dataclasses.fields(cls.config_class)][:2] == ["N", "M"]
    assert SAEConfig(16, 8) == SAEConfig(N=16, M=8)


@pytest.mark.parametrize("model", _models()[:5], ids=lambda m: m.cfg.architecture)
def test_flops_counts_the_forward_pass_and_a_training_step(model):
    activation = {"topk": "topk", "jumprelu": "jumprelu"}.get(model.cfg.architecture, "relu")
    widths = (8, 12, 7, 16) if model.cfg.architecture == "mlp" else (8, 16)
    assert model.flops(32) == encoder_flops(32, widths, activation=activation)
    assert model.flops(32, stage="train") == training_step_flops(32, widths, activation=activation, M=8)
    assert model.flops(32, stage="supervised") == training_step_flops(32, widths, activation=activation,
                                                                      decoder="none", M=8)
    with pytest.raises(ValueError, match="stage"):
        model.flops(32, stage="backward")


def test_sparse_coding_keeps_warm_codes_per_named_rows_not_per_batch_shape():
    # train and validation splits of the same shape: with codes keyed by shape they overwrote each other
    inst, other = make_instance(16, 8, 3, 48, seed=0), make_instance(16, 8, 3, 48, seed=1)
    model = _sparse_coding()
    train(model, inst.X, TrainConfig(steps=2, eval_every=1, progress=False), X_val=other.X, device="cpu")
    assert set(model.warm_codes_) == {"train", "val"}
    np.testing.assert_array_equal(model.warm_codes_["train"][0].numpy(), inst.X.astype(np.float32))
    np.testing.assert_array_equal(model.warm_codes_["val"][0].numpy(), other.X.astype(np.float32))


def test_sparse_coding_inference_runs_in_torch_and_matches_the_public_lasso():
    inst = make_instance(16, 8, 3, 30, seed=5)
    model = SparseCoding(SparseCodingConfig(N=16, M=8, alpha=0.05), seed=0).fix_decoder(inst.D)
    X = torch.as_tensor(inst.X, dtype=torch.float32)
    Z, flops = model.encode_with_flops(X)
    assert isinstance(Z, torch.Tensor) and Z.dtype == torch.float32
    reference = lasso(inst.X, inst.D, 0.05, nonnegative=True, method="fista", return_info=True)
    bound = lasso_code_atol(inst.X, inst.D, 0.05, True, Z.numpy(), reference.codes)
    assert (np.abs(Z.numpy() - reference.codes).max(1) <= bound).all()
    assert flops.total <= model.flops(30).total  # what was used, at most the max_iter bound


def test_fista_tensors_equals_the_public_fista_lasso():
    from gaptheory.solvers.fista import fista_tensors

    inst = make_instance(16, 8, 3, 20, seed=6)
    # the public lasso takes its step from NumPy's spectrum of D D^T, whose last digit depends on
    # the BLAS (torch's and NumPy's differ by ulps); given that step, it runs the same iterations
    # on rows rescaled by powers of two, which commute exactly with every operation (and the
    # stopping test is scale-free)
    lipschitz = float(np.linalg.eigvalsh(inst.D @ inst.D.T)[-1])
    codes, status, _, n_iter, _ = fista_tensors(torch.as_tensor(inst.X), torch.as_tensor(inst.D), 0.05,
                                                nonnegative=True, tol=1e-9, max_iter=5000, lipschitz=lipschitz)
    reference = lasso(inst.X, inst.D, 0.05, nonnegative=True, method="fista", tol=1e-9, return_info=True)
    np.testing.assert_array_equal(codes.numpy(), reference.codes)
    assert (status.numpy() == reference.status).all()
