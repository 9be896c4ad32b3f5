r"""A ReLU MLP encoder ``M -> h_1 -> ... -> N`` with an SAE-style decoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from .._validation import check_int, check_positive
from ..flops import FlopCount, encoder_flops, matmul_flops
from .base import Encoder, EncoderConfig

#: Ridge of the least-squares fit of the MLP's output layer (``fit_output_to_decoder``),
#: relative to the mean diagonal of the hidden-feature Gram matrix: the hidden layer can be
#: wider than the number of training rows (1024 units, 1024 rows), so the plain normal
#: equations are singular; this keeps the fit unique and its weights of moderate size.
MLP_OUTPUT_RIDGE = 1e-3


@dataclass(frozen=True)
class MLPEncoderConfig(EncoderConfig):
    """A ReLU MLP encoder ``M -> hidden[0] -> ... -> N`` with a ReLU on the codes."""

    architecture: ClassVar[str] = "mlp"
    hidden: tuple[int, ...] = (256,)  # hidden widths; the paper used (32,), (256,), (1024,)
    l1_coefficient: float = 0.03  # weight of mean_b ||z_b||_1 in the reconstruction loss
    center_output_bias: bool = True  # before training, set the output bias so every latent is active on half the rows
    fit_output_to_decoder: bool = False  # before training, fit the output layer by ridge least squares to X W_dec^T (the SAE's start)
    init_rows: int | None = None  # rows the data initialisation uses (a random subset drawn with the model's seed); None: all

    def __post_init__(self):
        super().__post_init__()
        if self.init_rows is not None:
            check_int(self.init_rows, "init_rows", minimum=1)
        if isinstance(self.hidden, (int, np.integer)) or not all(
            isinstance(h, (int, np.integer)) and h >= 1 for h in self.hidden
        ):
            raise ValueError(f"hidden must be a tuple of widths >= 1; got {self.hidden!r}. Pass e.g. (256,).")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        check_positive(self.l1_coefficient, "l1_coefficient", allow_zero=True)



class MLPEncoder(Encoder):
    r"""ReLU MLP encoder with an SAE-style decoder.

    .. math:: H_0 = X,\quad H_{l} = \mathrm{ReLU}(H_{l-1} W_l + b_l),\quad Z = H_{L+1}

    with widths ``(M, *hidden, N)``; weights ``weights[l]`` of shape (w_l, w_{l+1}) and
    ``biases[l]``, initialised like ``torch.nn.Linear`` (uniform in
    :math:`\pm 1/\sqrt{w_l}`) from the model's own generator; before training the output
    bias is median-centred on the data (:meth:`init_from_data`) so no latent starts dead;
    with ``fit_output_to_decoder`` the output layer is first fitted to the SAE's start
    ``X W_dec^T``, so each latent starts on its own atom (without it, latents the L1 term
    silences early stay dead; measurements in docs/results.md).
    The loss is that of the ReLU
    SAE (reconstruction plus ``l1_coefficient * mean ||z||_1``), or the squared code error
    when trained on known codes.

    Examples
    --------
    >>> mlp = MLPEncoder(MLPEncoderConfig(N=16, M=8, hidden=(32,)), seed=0)
    >>> mlp.encode(np.ones((5, 8))).shape
    (5, 16)
    """

    config_class = MLPEncoderConfig

    def __init__(self, cfg: MLPEncoderConfig, *, seed: int = 0):
        super().__init__(cfg, seed=seed)
        widths = self.widths
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(widths[:-1], widths[1:]):
            bound = 1.0 / np.sqrt(a)
            self.weights.append(nn.Parameter((torch.rand(a, b, generator=self._generator) * 2 - 1) * bound))
            self.biases.append(nn.Parameter((torch.rand(b, generator=self._generator) * 2 - 1) * bound))

    @property
    def widths(self):
        return (self.cfg.M, *self.cfg.hidden, self.cfg.N)

    def _saelens_state(self, input_scale):
        state = {name: t.detach().cpu().clone().contiguous() for name, t in self.state_dict().items()}
        state["weights.0"] /= input_scale  # the first layer sees x / s
        state["W_dec"] *= input_scale
        state["b_dec"] *= input_scale
        return state

    def encode_with_hidden_pre(self, X):
        H = X
        for W, b in zip(self.weights, self.biases):
            pre = H @ W + b
            H = torch.relu(pre)
        return H, pre

    def aux_loss(self, Z, hidden_pre):
        return self.cfg.l1_coefficient * Z.abs().sum(1).mean()

    @torch.no_grad()
    def init_from_data(self, X):
        """Initialise the output layer on the training rows: optionally fit it to the SAE's
        start (``fit_output_to_decoder``, :meth:`_fit_output_layer`), then median-centre its
        pre-activations (``center_output_bias``).

        ReLU hidden features have a positive mean shared by all inputs, so with random
        output weights a latent's pre-activation is often negative on *every* row: the
        latent starts dead and never receives a gradient. Setting
        ``b_out = -median_b(h_b W_out)`` makes each latent active on half the rows at the
        start, as the SAE initialisation ``W_enc = W_dec^T`` does. With ``init_rows`` both
        use a random subset of that many rows (their cost grows with the rows; a FLOP budget
        pays for them).
        """
        if self.cfg.init_rows is not None and len(X) > self.cfg.init_rows:
            X = X[torch.randperm(len(X), generator=self._generator)[: self.cfg.init_rows].to(X.device)]
        H = X
        for W, b in zip(list(self.weights)[:-1], list(self.biases)[:-1]):
            H = torch.relu(H @ W + b)
        if self.cfg.fit_output_to_decoder:
            self._fit_output_layer(H, (X - self.b_dec) @ self.W_dec.T)
        if self.cfg.center_output_bias:
            self.biases[-1].copy_(-(H @ self.weights[-1]).median(0).values)

    def flops(self, n_samples, *, stage="encode"):
        """:meth:`Encoder.flops`; ``stage="init"`` is :func:`mlp_output_init_flops` of this MLP's
        widths and initialisation options (on at most ``init_rows`` rows)."""
        if stage != "init":
            return super().flops(n_samples, stage=stage)
        if self.cfg.init_rows is not None:
            n_samples = min(n_samples, self.cfg.init_rows)
        return mlp_output_init_flops(n_samples, self.widths, fit=self.cfg.fit_output_to_decoder,
                                     center=self.cfg.center_output_bias)

    @torch.no_grad()
    def _fit_output_layer(self, H, target):
        r"""Ridge least squares ``[H, 1] [W_out; b_out] ~ target`` (``fit_output_to_decoder``).

        With ``target = X W_dec^T`` each latent starts as the SAE initialisation
        ``W_enc = W_dec^T`` sees it (its atom's projection), read from the random hidden
        features: latent i starts correlated with its own atom instead of a random
        direction, so the MLP starts where the SAE starts and L1 does not silence latents
        with no signal. In setting 1 (decoder fixed to the true D) that is the matched-filter
        code. Solve: :math:`(A^\top A + \lambda \bar d I)^{-1} A^\top T` with
        :math:`A = [H, 1]`, :math:`\lambda` = ``MLP_OUTPUT_RIDGE``.
        """
        A = torch.cat([H, H.new_ones(len(H), 1)], 1).double()
        gram = A.T @ A
        ridge = MLP_OUTPUT_RIDGE * torch.diagonal(gram).mean()
        solution = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype, device=gram.device),
                                      A.T @ target.double())
        self.weights[-1].copy_(solution[:-1].to(self.weights[-1].dtype))
        self.biases[-1].copy_(solution[-1].to(self.biases[-1].dtype))


def mlp_output_init_flops(B: int, widths, *, fit: bool, center: bool) -> FlopCount:
    r"""FLOPs of :meth:`MLPEncoder.init_from_data` on ``B`` rows (counted as training FLOPs).

    With widths ``(M, h_1, ..., h, N)``: the hidden features (the stack up to ``h``); with
    ``fit``, the target :math:`X W_{dec}^\top` (2BMN), the Gram matrix of :math:`A = [H, 1]`
    (2B(h+1)^2), :math:`A^\top T` (2B(h+1)N) and the solve (:math:`\tfrac23 (h+1)^3 + 2(h+1)^2 N`);
    with ``center``, the output pre-activations (2BhN) and one subtraction per entry (the
    median's comparisons are not counted).

    Examples
    --------
    >>> mlp_output_init_flops(4, (8, 16), fit=False, center=False).total
    0
    """
    B = check_int(B, "B", minimum=0)
    widths = tuple(widths)
    if not (fit or center) or len(widths) < 3:
        return FlopCount()
    M, h, N = widths[0], widths[-2], widths[-1]
    total = encoder_flops(B, widths[:-1])
    if fit:
        total = total + FlopCount(matmul_flops(B, M, N) + matmul_flops(h + 1, B, h + 1) + matmul_flops(h + 1, B, N)
                                  + (2 * (h + 1) ** 3) // 3 + matmul_flops(h + 1, h + 1, N), 0)
    if center:
        total = total + FlopCount(matmul_flops(B, h, N), B * N)
    return total

