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

#: float32 codes from the same weights in a different order of operations (SAELens subtracts
#: b_dec first, or gaptheory folded it into b_enc in float64): a few ulps of the pre-activations,
#: which are O(10) here, so 1e-5 relative to the largest code bounds it with room.
CODE_RTOL = 1e-5

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


def _close(a, b):
    return float((a - b).abs().max()) <= CODE_RTOL * max(1.0, float(b.abs().max()))


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
        assert _close(Z_theirs, Z_ours)
        assert _close(theirs.decode(Z_theirs), scale * model.decode(Z_ours))
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
        assert _close(ours.encode(X), theirs.encode(X))
        assert _close(ours.decode(ours.encode(X)), theirs.decode(theirs.encode(X)))


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
