"""scripts/real_sae_gap.py's SAE in code units: the float64 encoder it certifies against must be
the trained SAE itself (decoder bias folded in, non-unit decoder rows), for every architecture."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from gaptheory.encoders import JumpReLUSAE, JumpReLUSAEConfig, SAEConfig, SparseAutoencoder, TopKSAE, TopKSAEConfig
from gaptheory.gap import worst_case_error
from gaptheory.instances import sparse_codes

_path = Path(__file__).resolve().parents[1] / "scripts" / "real_sae_gap.py"
_spec = importlib.util.spec_from_file_location("real_sae_gap", _path)
real_sae_gap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(real_sae_gap)

N, M = 12, 6
SAES = {
    "relu": lambda: SparseAutoencoder(SAEConfig(N=N, M=M), seed=1),
    "topk": lambda: TopKSAE(TopKSAEConfig(N=N, M=M, K=3), seed=1),
    "jumprelu": lambda: JumpReLUSAE(JumpReLUSAEConfig(N=N, M=M, initial_threshold=0.05), seed=1),
}


def _perturbed(name):
    sae = SAES[name]()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # rows of norm 0.5-2 and nonzero biases: what the unit conversion must undo
        sae.W_dec.mul_(0.5 + 1.5 * torch.rand(N, 1, generator=generator))
        sae.b_dec.copy_(0.3 * torch.randn(M, generator=generator))
        sae.b_enc.copy_(0.1 * torch.randn(N, generator=generator))
    return sae


@pytest.mark.parametrize("name", sorted(SAES))
def test_code_unit_encoder_is_the_sae(name):
    sae = _perturbed(name)
    D, norms, relu_part, encoder, encode_units = real_sae_gap.code_unit_encoder(sae)
    assert np.allclose(np.linalg.norm(D, axis=1), 1.0) and not np.allclose(norms, 1.0)
    U = sparse_codes(64, N, 4, magnitudes=(0.5, 2.0), seed=3)
    X = U @ D + sae.b_dec.detach().double().numpy()  # = (U / norms) W_dec + b_dec
    observed = sae.encode(X) * norms  # the SAE in float32
    # float32 pre-activations of size ~|x| |W_enc| <= ~10 carry ~1e-6 error; a JumpReLU or TopK
    # decision that close to its boundary would be a tie, which these seeds do not draw.
    np.testing.assert_allclose(encode_units(U), observed, rtol=0, atol=1e-5)
    if name == "topk":
        assert ((encode_units(U) > 0).sum(axis=1) <= 3).all()
        assert encoder is relu_part
    else:
        # The closed-form worst case of the float64 encoder bounds what the SAE does on codes of the set.
        assert (np.abs(observed - U).max(axis=0) <= worst_case_error(encoder, D, 4, magnitudes=(0.5, 2.0)) + 1e-5).all()


@pytest.mark.parametrize("arguments, message", [
    (["--block", "0"], "--block must be at least 1"),
    (["--latents", "-1"], "--latents must be at least 0"),
    (["--percentiles", "95", "50"], "--percentiles must be LO HI"),
])
def test_bad_arguments_are_refused_before_anything_runs(tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as raised:
        real_sae_gap.main(["--out", str(tmp_path / "run"), *arguments])
    assert raised.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
