"""gaptheory's SAE folders against SAELens 6 itself, both directions."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sae_lens = pytest.importorskip("sae_lens")  # the `test` extra installs it: CI runs these

from gaptheory.encoders import (  # noqa: E402
    Encoder,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    SAEConfig,
    SparseAutoencoder,
    TopKSAE,
    TopKSAEConfig,
)

from gaptheory.encoders.jumprelu import MIN_THRESHOLD  # noqa: E402

from conftest import sum_atol  # noqa: E402

ARCHITECTURES = {"relu": (SparseAutoencoder, SAEConfig, {}), "topk": (TopKSAE, TopKSAEConfig, {"K": 3}),
                 "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {})}


def _trained_like(activation, seed):
    """A gaptheory SAE with nonzero biases (an initialised one has zeros, which hide b_dec errors)."""
    model_class, config_class, extra = ARCHITECTURES[activation]
    model = model_class(config_class(N=16, M=8, **extra), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
        if activation == "jumprelu":
            model.threshold.abs_()
    return model


def _rows(seed, scale):
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(256, 8)) * scale, dtype=torch.float32)


def _encode_atol(model, X):
    """float32 codes of the same weights in another order of operations (SAELens subtracts
    b_dec first, gaptheory folds it into b_enc in float64; TopK may rescale by the decoder
    norms): each pre-activation (x - b_dec) W_enc + b_enc is a sum of M + 2 terms, a few more
    roundings included, and ReLU, TopK and JumpReLU are 1-Lipschitz away from their
    thresholds. Same weights for both: the atol is (M + 4) eps32 times the terms' size."""
    W_enc, b_enc, b_dec = (model.W_enc.detach(), model.b_enc.detach(), model.b_dec.detach())
    size = (X.abs() + b_dec.abs()) @ W_enc.abs() + b_enc.abs()
    return sum_atol(W_enc.shape[0] + 4, float(size.max()), np.float32)


def _decode_atol(model, Z, code_atol):
    """z W_dec + b_dec: N + 1 terms (plus the codes' own error through |W_dec|)."""
    W_dec, b_dec = model.W_dec.detach(), model.b_dec.detach()
    size = Z.abs() @ W_dec.abs() + b_dec.abs()
    return sum_atol(W_dec.shape[0] + 2, float(size.max()), np.float32) + code_atol * float(W_dec.abs().sum(0).max())


def _close(a, b, atol):
    return float((a - b).abs().max()) <= atol


def _decisive_rows(model, X, atol):
    """Rows (B,) on which two implementations must give the same codes: no pre-activation
    within 2 atol of a discontinuity (a JumpReLU threshold; for TopK, a gap of at most 2 atol
    between the K-th and (K+1)-th largest), where the same weights in another order of
    operations may decide the other way by a whole activation. ReLU is continuous: every row."""
    pre = X.double() @ model.W_enc.detach().double() + model.b_enc.detach().double()
    if isinstance(model, JumpReLUSAE):
        theta = model.threshold.detach().double().clamp_min(MIN_THRESHOLD)
        return ((pre - theta).abs() > 2 * atol).all(1)
    if isinstance(model, TopKSAE):
        top = pre.topk(model.cfg.K + 1, dim=1).values
        return top[:, -2] - top[:, -1] > 2 * atol
    return torch.ones(len(X), dtype=torch.bool)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 13.5, 0.01]))
@pytest.mark.parametrize("activation", list(ARCHITECTURES))
def test_saved_folders_load_in_saelens_with_equal_codes_and_reconstructions(tmp_path_factory, activation, seed, scale):
    model = _trained_like(activation, seed)
    folder = model.save(tmp_path_factory.mktemp("sae"), input_scale=scale, hook_name="blocks.3.hook_resid_post",
                        model_name="all-MiniLM-L6-v2")
    theirs = sae_lens.SAE.load_from_disk(folder)
    X = _rows(seed, scale)  # raw activations; the model was trained on X / scale
    with torch.no_grad():
        Z_ours = model.encode(X / scale)
        Z_theirs = theirs.encode(X)
        code_atol = _encode_atol(model, X / scale)
        rows = _decisive_rows(model, X / scale, code_atol)
        assert rows.float().mean() > 0.9  # near-ties are rare: the comparison covers the rows
        assert _close(Z_theirs[rows], Z_ours[rows], code_atol)
        decode_atol = scale * _decode_atol(model, Z_ours, code_atol)
        assert _close(theirs.decode(Z_theirs)[rows], scale * model.decode(Z_ours)[rows], decode_atol)
    assert theirs.cfg.metadata.hook_name == "blocks.3.hook_resid_post"
    assert theirs.cfg.metadata.model_name == "all-MiniLM-L6-v2"
    assert theirs.cfg.architecture() == model.cfg.architecture


def _saelens_model(architecture, seed):
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    classes = {"standard": (StandardSAE, StandardSAEConfig, {}),
               "topk": (TopKSAE, TopKSAEConfig, {"k": 3, "rescale_acts_by_decoder_norm": True}),
               "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {})}
    model_class, config_class, extra = classes[architecture]
    model = model_class(config_class(d_in=8, d_sae=16, **extra))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
        if architecture == "jumprelu":
            model.threshold.abs_()
    return model


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16))
@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
def test_folders_saelens_saves_load_in_gaptheory_with_equal_codes(tmp_path_factory, architecture, seed):
    theirs = _saelens_model(architecture, seed)
    folder = tmp_path_factory.mktemp("saelens")
    theirs.save_model(folder)
    ours = Encoder.load(folder)
    X = _rows(seed, 1.0)
    with torch.no_grad():
        code_atol = _encode_atol(theirs, X)
        rows = _decisive_rows(ours, X, code_atol)
        assert rows.float().mean() > 0.9  # near-ties are rare: the comparison covers the rows
        assert _close(ours.encode(X)[rows], theirs.encode(X)[rows], code_atol)
        Z = theirs.encode(X)
        assert _close(ours.decode(ours.encode(X))[rows], theirs.decode(Z)[rows], _decode_atol(theirs, Z, code_atol))


@pytest.mark.parametrize("field,value", [("normalize_activations", "layer_norm"), ("architecture", "gated"),
                                         ("reshape_activations", "hook_z")])
def test_load_refuses_saelens_folders_gaptheory_cannot_represent(tmp_path, field, value):
    theirs = _saelens_model("standard", 0)
    theirs.save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg[field] = value
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=field if field != "architecture" else "gated"):
        Encoder.load(tmp_path)
