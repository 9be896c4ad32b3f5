r"""How well inferred codes and learned dictionaries match the ground truth.

Every function takes the ground truth first: ``Z_true (B, N)`` against ``Z_hat (B, N')``,
``D_true (N, M)`` against ``D_hat (N', M)``. Latents of a learned model come in an
arbitrary order, so code and dictionary scores match them to the true latents one to
one first (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``); the match
may leave latents unmatched when ``N' != N``.

References
----------
.. [1] Hyvarinen & Morioka (2016), "Unsupervised feature extraction by time-contrastive
   learning and nonlinear ICA", NeurIPS (the mean correlation coefficient, MCC).
.. [2] O'Neill, Gumran & Klindt (2024), "Compute optimal inference and provable
   amortisation gap in sparse autoencoders", arXiv 2411.13117, Section 4 (MCC of codes,
   matched cosine of dictionaries).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._validation import as_generator, check_array, check_bool, check_int, check_positive, row_norms, times_power_of_two
from .instances import random_dictionary

#: A latent whose standard deviation over the batch is at most this (relative to the
#: largest latent's) is constant: its correlation is undefined and counts as 0, never NaN.
CONSTANT_RTOL = 1e-12

#: A code entry counts as active when its magnitude exceeds this. True nonzeros of our
#: instances are >= 0.5 (``sparse_codes`` magnitudes), ReLU/TopK/FISTA produce exact zeros,
#: so 1e-3 separates support from float32 round-off without hiding real activity.
ACTIVE_THRESHOLD = 1e-3

#: Random dictionaries drawn to estimate the chance level of dictionary recovery.
CHANCE_DRAWS = 5


def _check_pair(A, B, names: tuple[str, str], axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate two finite 2-D arrays that must agree along ``axis``."""
    A, B = check_array(A, names[0]), check_array(B, names[1])
    if A.shape[axis] != B.shape[axis]:
        what = "rows (samples)" if axis == 0 else "columns"
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of {what}; got "
            f"{names[0]}{A.shape} and {names[1]}{B.shape}."
        )
    return A, B


def _match(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Maximum-weight one-to-one matching of rows to columns of a (N, N') similarity.

    Returns matched row indices, matched column indices and the sum of matched entries
    divided by the number of rows N (unmatched true latents count as 0).
    """
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return rows, cols, float(similarity[rows, cols].sum() / similarity.shape[0])


def correlation_matrix(Z_true, Z_hat) -> np.ndarray:
    r"""Absolute Pearson correlations between every true and every inferred latent.

    .. math:: C_{ij} = |\operatorname{corr}(Z^{\text{true}}_{:, i}, \hat Z_{:, j})|

    A constant column (standard deviation at most ``CONSTANT_RTOL`` times the largest
    one of its array) gets correlation 0 with everything, so the result never holds NaN.

    Parameters
    ----------
    Z_true : array_like of shape (B, N)
    Z_hat : array_like of shape (B, N')

    Returns
    -------
    C : ndarray of shape (N, N'), entries in [0, 1].

    Examples
    --------
    >>> correlation_matrix([[0, 1.0], [1, 0], [2, 5]], [[0.0, 7], [2, 7], [4, 7]]).round(3).tolist()
    [[1.0, 0.0], [0.756, 0.0]]
    """
    Z_true, Z_hat = _check_pair(Z_true, Z_hat, ("Z_true", "Z_hat"), axis=0)
    return _abs_correlation(Z_true, Z_hat)


def _unit_scale(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rescale arrays by a common power of two so that their largest magnitude is in [0.5, 1).

    Scores here are ratios, invariant to a common scale; squaring data of size 1e160 or
    1e-160 directly overflows or underflows float64, so sums of squares are formed on
    rescaled data. A power of two rescales exactly, so the scores are bit-for-bit those
    of the unscaled data wherever that did not overflow.
    """
    peak = max(float(np.max(np.abs(a))) for a in arrays)
    if peak == 0:
        return arrays
    exponent = int(np.frexp(peak)[1])
    return tuple(times_power_of_two(a, -exponent) for a in arrays)


def _abs_correlation(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    def standardise(Y):
        (Y,) = _unit_scale(Y)  # correlation is scale-free; each array on its own scale
        centred = Y - Y.mean(axis=0)
        std = np.sqrt((centred**2).mean(axis=0))
        constant = std <= CONSTANT_RTOL * max(float(std.max()), np.finfo(float).tiny)
        return np.where(constant, 0.0, centred / np.where(constant, 1.0, std))

    C = np.abs(standardise(A).T @ standardise(B)) / A.shape[0]
    return np.clip(C, 0.0, 1.0)


def mcc(Z_true, Z_hat, *, return_matching: bool = False):
    r"""Mean correlation coefficient after the optimal one-to-one matching of latents.

    .. math:: \text{MCC} = \frac1N \max_{\pi} \sum_{i=1}^{N} |\operatorname{corr}(Z^{\text{true}}_{:, i}, \hat Z_{:, \pi(i)})|

    over injective matchings :math:`\pi` (Hungarian algorithm). When ``Z_hat`` has fewer
    latents than ``Z_true`` the unmatched true latents count as 0, so a model cannot
    score well by dropping latents; surplus inferred latents are ignored. Constant
    latents have correlation 0 (see :func:`correlation_matrix`).

    Parameters
    ----------
    Z_true : array_like of shape (B, N)
    Z_hat : array_like of shape (B, N')
    return_matching : bool
        Also return ``(rows, cols)``: true latent ``rows[i]`` is matched to inferred
        latent ``cols[i]``.

    Returns
    -------
    mcc : float in [0, 1]
    (rows, cols) : tuple of ndarray, only with ``return_matching``.

    References
    ----------
    .. [1] Hyvarinen & Morioka (2016), NeurIPS; O'Neill, Gumran & Klindt (2024), arXiv 2411.13117, Sec. 4.

    Examples
    --------
    >>> Z = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    >>> mcc(Z, Z[:, ::-1] * 5.0)
    1.0
    """
    return_matching = check_bool(return_matching, "return_matching")
    Z_true, Z_hat = _check_pair(Z_true, Z_hat, ("Z_true", "Z_hat"), axis=0)
    rows, cols, score = _match(_abs_correlation(Z_true, Z_hat))
    return (score, (rows, cols)) if return_matching else score


def align_codes(Z_hat, matching: tuple[np.ndarray, np.ndarray], N: int) -> np.ndarray:
    """Reorder inferred codes to the true latents' order using a matching from :func:`mcc`.

    Parameters
    ----------
    Z_hat : array_like of shape (B, N')
    matching : (rows, cols)
        As returned by ``mcc(..., return_matching=True)``.
    N : int
        The number of true latents; unmatched true latents get a zero column.

    Returns
    -------
    Z_aligned : ndarray of shape (B, N)
    """
    Z_hat = check_array(Z_hat, "Z_hat")
    N = check_int(N, "N", minimum=1)
    try:
        rows, cols = (np.asarray(m, dtype=np.intp) for m in matching)
    except (TypeError, ValueError):
        raise TypeError(
            "matching must be a pair (rows, cols) of integer index arrays, as returned by "
            "mcc(..., return_matching=True)."
        ) from None
    if rows.shape != cols.shape or rows.ndim != 1:
        raise ValueError(f"matching rows and cols must be 1-D of equal length; got {rows.shape}, {cols.shape}.")
    if rows.size and not (0 <= rows.min() and rows.max() < N and 0 <= cols.min() and cols.max() < Z_hat.shape[1]):
        raise ValueError(
            f"matching indexes outside N={N} true latents or Z_hat's {Z_hat.shape[1]} columns; "
            "pass the matching mcc returned for these arrays."
        )
    aligned = np.zeros((Z_hat.shape[0], N))
    aligned[:, rows] = Z_hat[:, cols]
    return aligned


@dataclass(frozen=True)
class DictionaryRecovery:
    """Matched |cosine| between true and learned atoms, with its chance level.

    Attributes
    ----------
    score : float
        Mean over true atoms of the matched absolute cosine similarity.
    chance : float
        Mean ``score`` of random Gaussian dictionaries shaped like the learned one.
    chance_std : float
        Standard deviation of that score over the random draws.
    """

    score: float
    chance: float
    chance_std: float

    def to_dict(self) -> dict:
        return asdict(self)


def _abs_cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    def unit_rows(Y):  # zero rows stay zero and so score 0
        norms = row_norms(Y)[:, None]
        return Y / np.where(norms > 0, norms, 1.0)

    A, B = unit_rows(A), unit_rows(B)
    return np.clip(np.abs(A @ B.T), 0.0, 1.0)


def dictionary_recovery(D_true, D_hat, *, n_chance: int = CHANCE_DRAWS, seed=0) -> DictionaryRecovery:
    r"""Matched absolute cosine between true and learned atoms, and the chance level.

    .. math:: s(D, \hat D) = \frac1N \max_\pi \sum_{i=1}^N
              \frac{|\langle d_i, \hat d_{\pi(i)} \rangle|}{\|d_i\| \|\hat d_{\pi(i)}\|}

    With few dimensions random atoms are already well aligned (for M = 8, N = 16 the
    chance level is about 0.6), so ``score`` means little without ``chance``: the same
    score for ``n_chance`` Gaussian dictionaries of ``D_hat``'s shape.

    Parameters
    ----------
    D_true : array_like of shape (N, M)
    D_hat : array_like of shape (N', M)
        Learned atoms as rows (``W_dec``); zero rows score 0.
    n_chance : int
        Random dictionaries drawn for the chance level.
    seed : int or numpy.random.Generator
        Seed of those draws.

    Returns
    -------
    DictionaryRecovery

    Examples
    --------
    >>> D = random_dictionary(16, 8, seed=0)
    >>> result = dictionary_recovery(D, -D[::-1])
    >>> round(result.score, 6), result.chance < 0.9
    (1.0, True)
    """
    D_true, D_hat = _check_pair(D_true, D_hat, ("D_true", "D_hat"), axis=1)
    n_chance = check_int(n_chance, "n_chance", minimum=1)
    rng = as_generator(seed)
    score = _match(_abs_cosine(D_true, D_hat))[2]
    chance = [
        _match(_abs_cosine(D_true, random_dictionary(D_hat.shape[0], D_hat.shape[1], seed=rng)))[2]
        for _ in range(n_chance)
    ]
    return DictionaryRecovery(score=score, chance=float(np.mean(chance)), chance_std=float(np.std(chance)))


@dataclass(frozen=True)
class SupportScores:
    """Support recovery: precision, recall and F1 of the active entries."""

    precision: float
    recall: float
    f1: float

    def to_dict(self) -> dict:
        return asdict(self)


def support_scores(Z_true, Z_hat, *, threshold: float = ACTIVE_THRESHOLD) -> SupportScores:
    r"""Precision, recall and F1 of the predicted support, pooled over all entries.

    An entry is active when its magnitude exceeds ``threshold``. With
    :math:`S = \{|Z^{\text{true}}| > t\}`, :math:`\hat S = \{|\hat Z| > t\}`:
    precision :math:`|S \cap \hat S| / |\hat S|`, recall :math:`|S \cap \hat S| / |S|`,
    F1 their harmonic mean; an empty denominator gives 0. Codes must be aligned to the
    true latents first (:func:`align_codes`) when their order is arbitrary.

    Parameters
    ----------
    Z_true, Z_hat : array_like of shape (B, N)
    threshold : float
        Activity threshold, >= 0.

    Examples
    --------
    >>> support_scores([[1.0, 0, 1]], [[0.9, 0.5, 0]]).to_dict()
    {'precision': 0.5, 'recall': 0.5, 'f1': 0.5}
    """
    Z_true, Z_hat = _check_same_shape(Z_true, Z_hat)
    threshold = check_positive(threshold, "threshold", allow_zero=True)
    true, hat = np.abs(Z_true) > threshold, np.abs(Z_hat) > threshold
    hits = float((true & hat).sum())
    precision = hits / hat.sum() if hat.any() else 0.0
    recall = hits / true.sum() if true.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return SupportScores(precision=float(precision), recall=float(recall), f1=float(f1))


def _check_same_shape(A, B, names=("Z_true", "Z_hat")) -> tuple[np.ndarray, np.ndarray]:
    A, B = check_array(A, names[0]), check_array(B, names[1])
    if A.shape != B.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape; got {A.shape} and {B.shape}. "
            "Align learned codes to the true latents first with align_codes."
        )
    return A, B


def relative_code_error(Z_true, Z_hat) -> float:
    r"""Relative Frobenius error of the codes, :math:`\|\hat Z - Z\|_F / \|Z\|_F`.

    Raises ``ValueError`` when ``Z_true`` is all zeros (the ratio is undefined).

    Examples
    --------
    >>> relative_code_error([[3.0, 4.0]], [[3.0, 0.0]])
    0.8
    """
    Z_true, Z_hat = _check_same_shape(Z_true, Z_hat)
    Z_true, Z_hat = _unit_scale(Z_true, Z_hat)
    norm = np.linalg.norm(Z_true)
    if norm == 0:
        raise ValueError("Z_true is all zeros, so the relative code error is undefined; pass nonzero codes.")
    return float(np.linalg.norm(Z_hat - Z_true) / norm)


def explained_variance(X, X_hat) -> float:
    r"""Fraction of the variance of ``X`` explained by the reconstruction ``X_hat``.

    .. math:: 1 - \frac{\sum_b \|x_b - \hat x_b\|^2}{\sum_b \|x_b - \bar x\|^2}

    Can be negative for reconstructions worse than the mean.

    Examples
    --------
    >>> explained_variance([[1.0, 0], [-1, 0]], [[0.5, 0], [-0.5, 0]])
    0.75
    """
    X, X_hat = _check_same_shape(X, X_hat, ("X", "X_hat"))
    X, X_hat = _unit_scale(X, X_hat)
    total = float(((X - X.mean(axis=0)) ** 2).sum())
    if total == 0:
        raise ValueError("X has zero variance, so explained variance is undefined; pass varied rows.")
    return 1.0 - float(((X - X_hat) ** 2).sum()) / total


def mean_l0(Z, *, threshold: float = ACTIVE_THRESHOLD) -> float:
    """Average number of active latents per row (``|z| > threshold``).

    Examples
    --------
    >>> mean_l0([[1.0, 0, 2], [0, 0, 1e-9]])
    1.0
    """
    Z = check_array(Z, "Z")
    threshold = check_positive(threshold, "threshold", allow_zero=True)
    return float((np.abs(Z) > threshold).sum(axis=1).mean())


def dead_latents(Z, *, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Number of latents never active (``|z| > threshold``) on any row of ``Z``.

    Examples
    --------
    >>> dead_latents([[1.0, 0, 0], [0, 0, 3]])
    1
    """
    Z = check_array(Z, "Z")
    threshold = check_positive(threshold, "threshold", allow_zero=True)
    return int((~(np.abs(Z) > threshold).any(axis=0)).sum())


@dataclass(frozen=True)
class CodeMetrics:
    """All code-level scores of one encoder on one split (see the functions of the same name).

    Support scores and the relative code error are computed after aligning the
    inferred latents to the true ones with the MCC matching.
    """

    mcc: float
    precision: float
    recall: float
    f1: float
    relative_code_error: float
    explained_variance: float
    mean_l0: float
    dead_latents: int

    def to_dict(self) -> dict:
        return asdict(self)


def code_metrics(Z_true, Z_hat, X, X_hat, *, threshold: float = ACTIVE_THRESHOLD) -> CodeMetrics:
    """Compute every code-level score at once.

    Parameters
    ----------
    Z_true : array_like of shape (B, N)
    Z_hat : array_like of shape (B, N')
    X, X_hat : array_like of shape (B, M)
        Observations and their reconstruction from ``Z_hat``.
    threshold : float
        Activity threshold for support, L0 and dead latents.

    Returns
    -------
    CodeMetrics

    Examples
    --------
    >>> Z = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    >>> code_metrics(Z, Z[:, ::-1], Z, Z).f1
    1.0
    """
    Z_true, Z_hat = _check_pair(Z_true, Z_hat, ("Z_true", "Z_hat"), axis=0)
    score, matching = mcc(Z_true, Z_hat, return_matching=True)
    aligned = align_codes(Z_hat, matching, Z_true.shape[1])
    support = support_scores(Z_true, aligned, threshold=threshold)
    return CodeMetrics(
        mcc=score,
        precision=support.precision,
        recall=support.recall,
        f1=support.f1,
        relative_code_error=relative_code_error(Z_true, aligned),
        explained_variance=explained_variance(X, X_hat),
        mean_l0=mean_l0(Z_hat, threshold=threshold),
        dead_latents=dead_latents(Z_hat, threshold=threshold),
    )
