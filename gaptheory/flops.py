r"""Analytic FLOP counts of training and inference for every encoder.

Conventions
-----------
- A matrix product of shapes (a, b) @ (b, c) costs :math:`2abc` FLOPs (one multiply and
  one add per term), the convention of ``torch.utils.flop_counter.FlopCounterMode``;
  ``tests/test_flops.py`` checks the matmul part of these counts against it exactly.
- Elementwise work is counted per entry with the constants below and reported apart
  from the matmuls (:class:`FlopCount`), so the dominant term can be checked on its own.
- The batch size B is counted once: a step over B samples costs B times the per-sample
  work, never ``B * n_samples`` (the reference code multiplied by both for sparse coding).
- Two separate axes: **training** FLOPs (all optimisation steps, summed) and
  **inference** FLOPs (producing codes for the B test samples once training is done).
  Per-sample optimisation (FISTA, also as inference-time optimisation after an SAE) has
  no fixed cost: :func:`fista_flops` takes the iteration count each row actually used
  (``SolveResult.n_iter``).

Architecture of an encoder, as counted: a stack of affine layers with widths
``(M, h_1, ..., h_L, N)``, ReLU between layers and the output activation after the
last; an SAE is the stack ``(M, N)``. Decoding is :math:`\hat X = Z W_{dec} + b_{dec}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validation import check_choice, check_int
from .solvers import FISTA_CHECK_EVERY

#: FLOPs per entry of each output activation in the forward pass: relu one comparison;
#: jumprelu a comparison and a multiply by the mask; topk about log2(N) comparisons per
#: entry (a partial sort) plus the scatter, counted via ``_activation_flops``; linear none.
ACTIVATION_FLOPS = {"relu": 1, "jumprelu": 2, "linear": 0}

#: Adam does, per trainable scalar and step: two moment updates (3 + 4 FLOPs), two bias
#: corrections (2), a square root, an add of eps, a divide, a scale and the update (5).
ADAM_FLOPS_PER_PARAMETER = 14

#: Renormalising the decoder rows: square, sum and divide per entry, plus N square roots.
RENORM_FLOPS_PER_ENTRY = 3

#: FISTA per row and iteration, besides the (N, N) Gram product: gradient step (3N),
#: soft threshold (2N), restart test (4N), momentum extrapolation (3N).
FISTA_ELEMENTWISE_PER_LATENT = 12

#: FISTA duality-gap check per row, besides its two products with D and G: residual,
#: squares and sums over M (5M); correlations, abs/max and the L1 norm over N (4N).
GAP_ELEMENTWISE_PER_DIM, GAP_ELEMENTWISE_PER_LATENT = 5, 4

#: Losses per entry: squared error (subtract, square, sum: 3); L1 penalty (abs, sum: 2);
#: the JumpReLU L0 penalty (step and sum: 2).
SQUARED_ERROR_FLOPS, L1_FLOPS, L0_FLOPS = 3, 2, 2

ACTIVATIONS = ("relu", "topk", "jumprelu", "linear")


@dataclass(frozen=True)
class FlopCount:
    """FLOPs split into matrix products and elementwise work.

    Attributes
    ----------
    matmul : int
        FLOPs of matrix products, :math:`2abc` each.
    elementwise : int
        Everything else, counted with the module constants.
    """

    matmul: int = 0
    elementwise: int = 0

    @property
    def total(self) -> int:
        """``matmul + elementwise``."""
        return self.matmul + self.elementwise

    def __add__(self, other: "FlopCount") -> "FlopCount":
        return FlopCount(self.matmul + other.matmul, self.elementwise + other.elementwise)

    def __mul__(self, times: int) -> "FlopCount":
        return FlopCount(self.matmul * int(times), self.elementwise * int(times))

    __rmul__ = __mul__


def matmul_flops(a: int, b: int, c: int) -> int:
    """FLOPs of an (a, b) @ (b, c) product: ``2 * a * b * c``.

    Examples
    --------
    >>> matmul_flops(1024, 8, 16)
    262144
    """
    return 2 * check_int(a, "a", minimum=0) * check_int(b, "b", minimum=0) * check_int(c, "c", minimum=0)


def _check_widths(widths) -> tuple[int, ...]:
    widths = tuple(widths)
    if len(widths) < 2:
        raise ValueError(f"widths must list at least (M, N); got {widths!r}.")
    return tuple(check_int(w, "widths entry", minimum=1) for w in widths)


def _activation_flops(activation: str, n_entries: int, N: int) -> int:
    if activation == "topk":
        return n_entries * (math.ceil(math.log2(max(N, 2))) + 1)
    return n_entries * ACTIVATION_FLOPS[activation]


def encoder_flops(B: int, widths, *, activation: str = "relu") -> FlopCount:
    r"""FLOPs of encoding ``B`` samples with an affine stack: the inference cost.

    .. math:: \text{matmul} = \sum_{l} 2 B w_l w_{l+1}, \qquad
              \text{elementwise} = \sum_l B w_{l+1} \ (\text{bias}) + \text{activations}

    Hidden layers use ReLU (1 FLOP per entry); the output uses ``activation``.

    Parameters
    ----------
    B : int
        The number of samples.
    widths : sequence of int
        ``(M, N)`` for an SAE, ``(M, h_1, ..., N)`` for an MLP.
    activation : {"relu", "topk", "jumprelu", "linear"}

    Examples
    --------
    >>> encoder_flops(1024, (8, 16)).matmul  # 2 * 1024 * 8 * 16
    262144
    """
    B = check_int(B, "B", minimum=0)
    widths = _check_widths(widths)
    check_choice(activation, "activation", ACTIVATIONS)
    matmul = sum(matmul_flops(B, a, b) for a, b in zip(widths[:-1], widths[1:]))
    hidden = sum(B * w for w in widths[1:-1]) * (1 + ACTIVATION_FLOPS["relu"])
    out = B * widths[-1] + _activation_flops(activation, B * widths[-1], widths[-1])
    return FlopCount(matmul, hidden + out)


def training_step_flops(
    B: int,
    widths,
    *,
    activation: str = "relu",
    decoder: str = "learned",
    M: int | None = None,
) -> FlopCount:
    r"""FLOPs of one gradient step of an encoder on a batch of ``B`` samples.

    Forward: the encoder (:func:`encoder_flops`); then, with a decoder, the product
    :math:`Z W_{dec}` (2BNM), its bias (BM), the squared error (3BM) and the sparsity
    penalty (2BN); without one (``decoder="none"``, supervised regression of the codes),
    the squared error against the true codes (3BN).
    Backward, per affine layer (a, b): the weight gradient (2Bab) always, the input
    gradient (2Bab) for every layer but the first (the data needs no gradient), and
    elementwise work equal to the forward's. Through a decoder: the code gradient
    (2BNM) always and the decoder gradient (2NBM) when it is learned.
    Update: Adam on every trainable scalar (``ADAM_FLOPS_PER_PARAMETER``; JumpReLU adds its
    N thresholds) and, with a
    learned decoder, the row renormalisation (``RENORM_FLOPS_PER_ENTRY`` per entry).

    Parameters
    ----------
    B : int
        B, the batch size (counted once).
    widths : sequence of int
        Encoder widths ``(M, ..., N)``.
    activation : str
        Output activation, see :func:`encoder_flops`.
    decoder : {"learned", "fixed", "none"}
        Setting 3, setting 1 and setting 2 respectively.
    M : int, optional
        Input dimension of the decoder output; defaults to ``widths[0]``.

    Examples
    --------
    >>> step = training_step_flops(1024, (8, 16))
    >>> step.matmul == 5 * 2 * 1024 * 8 * 16  # 2 forward + 3 backward products
    True
    """
    B = check_int(B, "B", minimum=0)
    widths = _check_widths(widths)
    check_choice(decoder, "decoder", ("learned", "fixed", "none"))
    M = widths[0] if M is None else check_int(M, "M", minimum=1)
    N = widths[-1]
    forward = encoder_flops(B, widths, activation=activation)
    layers = list(zip(widths[:-1], widths[1:]))
    backward_matmul = sum(matmul_flops(B, a, b) for a, b in layers)  # weight gradients
    backward_matmul += sum(matmul_flops(B, a, b) for a, b in layers[1:])  # input gradients
    parameters = sum(a * b + b for a, b in layers) + (N if activation == "jumprelu" else 0)
    step = FlopCount(forward.matmul + backward_matmul, 2 * forward.elementwise)
    if decoder == "none":
        step += FlopCount(0, 2 * SQUARED_ERROR_FLOPS * B * N)
    else:
        decode = matmul_flops(B, N, M)
        loss = (1 + SQUARED_ERROR_FLOPS) * B * M + L1_FLOPS * B * N
        step += FlopCount(2 * decode, 2 * loss)  # forward product and code gradient
        if decoder == "learned":
            step += FlopCount(decode, RENORM_FLOPS_PER_ENTRY * N * M)
            parameters += N * M + M
    return step + FlopCount(0, ADAM_FLOPS_PER_PARAMETER * parameters)


def fista_flops(n_iter, *, N: int, M: int, check_every: int = FISTA_CHECK_EVERY) -> FlopCount:
    r"""FLOPs of batched FISTA on ``B`` rows that used ``n_iter[b]`` iterations each.

    Once: the Gram matrix :math:`D D^\top` (2N^2M). Per row: the correlations
    :math:`x D^\top` (2MN); per iteration the gradient product :math:`y G` (2N^2) and
    ``FISTA_ELEMENTWISE_PER_LATENT * N`` elementwise FLOPs; per duality-gap check
    (every ``check_every`` iterations and at the last one) the products
    :math:`z D` (2NM) and :math:`z G` (2N^2) plus the elementwise terms of
    ``GAP_ELEMENTWISE_*``. Rows leave the batch when they converge, so the cost follows
    each row's own ``n_iter`` (:attr:`gaptheory.solvers.SolveResult.n_iter`).

    Parameters
    ----------
    n_iter : array_like of int, shape (B,)
        Iterations used per row.
    N, M : int
        Latents and input dimensions (keyword-only: the two are easily swapped).
    check_every : int
        Iterations between duality-gap checks (``gaptheory.solvers.FISTA_CHECK_EVERY``).

    Examples
    --------
    >>> fista_flops([10], N=16, M=8).matmul == 2*16*16*8 + 2*8*16 + 10*2*16*16 + (2*16*8 + 2*16*16)
    True
    """
    n_iter = np.asarray(n_iter).reshape(-1)
    if n_iter.dtype.kind not in "iu" and not (n_iter.dtype.kind == "f" and np.all(np.isfinite(n_iter))
                                              and np.all(n_iter == np.rint(n_iter))):
        raise TypeError(f"n_iter must be whole iteration counts (ints) per row; got {n_iter[:5].tolist()}.")
    n_iter = n_iter.astype(np.int64)
    if (n_iter < 0).any():
        raise ValueError(f"n_iter must be >= 0 per row; got minimum {int(n_iter.min())}.")
    M = check_int(M, "M", minimum=1)
    N = check_int(N, "N", minimum=1)
    check_every = check_int(check_every, "check_every", minimum=1)
    iterations = int(n_iter.sum())
    checks = int(np.ceil(n_iter / check_every).sum())
    rows = n_iter.size
    matmul = (
        matmul_flops(N, M, N)
        + rows * matmul_flops(1, M, N)
        + iterations * matmul_flops(1, N, N)
        + checks * (matmul_flops(1, N, M) + matmul_flops(1, N, N))
    )
    elementwise = iterations * FISTA_ELEMENTWISE_PER_LATENT * N + checks * (
        GAP_ELEMENTWISE_PER_DIM * M + GAP_ELEMENTWISE_PER_LATENT * N
    )
    return FlopCount(matmul, elementwise)


def dictionary_step_flops(B: int, *, N: int, M: int) -> FlopCount:
    r"""FLOPs of one decoder update of sparse coding, codes held fixed, on ``B`` rows.

    Forward :math:`Z W_{dec}` (2BNM), squared error (3BM); backward the decoder
    gradient :math:`Z^\top G_X` (2NBM, the codes need none); Adam on the N x M decoder
    and the row renormalisation. Add :func:`fista_flops` of the inference that produced
    the codes to get a whole sparse-coding step.

    Examples
    --------
    >>> dictionary_step_flops(1024, N=16, M=8).matmul == 2 * (2 * 1024 * 16 * 8)
    True
    """
    B = check_int(B, "B", minimum=0)
    M = check_int(M, "M", minimum=1)
    N = check_int(N, "N", minimum=1)
    decode = matmul_flops(B, N, M)
    elementwise = 2 * (1 + SQUARED_ERROR_FLOPS) * B * M + (
        ADAM_FLOPS_PER_PARAMETER + RENORM_FLOPS_PER_ENTRY
    ) * N * M
    return FlopCount(2 * decode, elementwise)


#: best_subset per support, once per call: the eigenvalue check and the inverse of its
#: s x s Gram block, about this many times s^3 FLOPs (LU inverse 2s^3, symmetric eigenvalues ~s^3).
SUPPORT_SETUP_FLOPS_PER_CUBE = 3


def best_subset_flops(B: int, *, N: int, M: int, K: int) -> FlopCount:
    r"""FLOPs of :func:`gaptheory.solvers.best_subset` on ``B`` rows (exhaustive K-sparse least squares).

    Once: the Gram matrix :math:`D D^\top` (2N^2M, matmul) and, per support S of size s,
    the check and inverse of :math:`G_S` (``SUPPORT_SETUP_FLOPS_PER_CUBE * s^3``,
    elementwise bucket). Per row: the correlations :math:`x D^\top` (2NM) and the final
    :math:`z D` (2NM); per row and support the codes :math:`G_S^{-1} b_S` (2s^2, matmul), then
    :math:`c_S \cdot b_S` and the residual (2s + 1), the sign test (s) and the comparison (1);
    the squared error of the objective (3M). The count is the same for every row: the
    search is exhaustive, so :math:`\sum_{s \le K} \binom{N}{s}` supports per row.

    Examples
    --------
    >>> best_subset_flops(1, N=16, M=8, K=3).matmul == 2*16*16*8 + 2*(2*16*8) + 2*(16*1 + 120*4 + 560*9)
    True
    """
    B = check_int(B, "B", minimum=0)
    M = check_int(M, "M", minimum=1)
    N = check_int(N, "N", minimum=1)
    K = check_int(K, "K", minimum=1, maximum=N)
    counts = {s: math.comb(N, s) for s in range(1, K + 1)}
    per_row_matmul = 2 * matmul_flops(1, M, N) + sum(c * matmul_flops(1, s, s) for s, c in counts.items())
    per_row_elementwise = sum(c * (3 * s + 2) for s, c in counts.items()) + SQUARED_ERROR_FLOPS * M
    setup = sum(c * SUPPORT_SETUP_FLOPS_PER_CUBE * s ** 3 for s, c in counts.items())
    return FlopCount(matmul_flops(N, M, N) + B * per_row_matmul,
                     setup + B * per_row_elementwise)
