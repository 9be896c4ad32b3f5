r"""Exact worst-case error of a ReLU encoder on a code set, in closed form.

:func:`worst_case_error` evaluates ``relu(X @ W_enc + b_enc)`` on the box code set of codes
with at most K nonzeros in :math:`\{0\} \cup [lo, hi]` without enumerating it (the worst codes
are the top-K sums of :math:`u = D w`); :func:`code_set_error` on an explicit code set.

References
----------
.. [1] ``proofs/T3_exact_lp.md``.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_array, check_codes, check_dictionary, check_k
from ..instances import _check_magnitudes


def _encoder_weights(encoder, n_dims: int, n_latents: int):
    W_enc = check_array(getattr(encoder, "W_enc"), "encoder.W_enc")
    b_enc = check_array(getattr(encoder, "b_enc"), "encoder.b_enc", ndim=1)
    if W_enc.shape != (n_dims, n_latents) or b_enc.shape != (n_latents,):
        raise ValueError(
            f"encoder must have W_enc of shape (M, N) = {(n_dims, n_latents)} and b_enc of shape (N,); got "
            f"{W_enc.shape} and {b_enc.shape}. Fold a decoder bias in first: b_enc - b_dec @ W_enc."
        )
    return W_enc, b_enc


def _top_sum(U: np.ndarray, count: int) -> np.ndarray:
    """Row-wise sum of the ``count`` largest entries of ``max(U, 0)``."""
    if count <= 0 or U.shape[1] == 0:
        return np.zeros(U.shape[0])
    count = min(count, U.shape[1])
    positive = np.maximum(U, 0.0)
    return -np.sort(-positive, axis=1)[:, :count].sum(axis=1) if count < U.shape[1] else positive.sum(axis=1)


def worst_case_error(encoder, D, k: int, *, magnitudes=(1.0, 1.0), _checked: bool = False) -> np.ndarray:
    r"""Exact worst-case error per latent of ``relu(X @ W_enc + b_enc)`` over the box code set.

    For latent ``i`` with :math:`u = D w_i` the worst codes are explicit (no enumeration):

    .. math::
        \max\Big(\mathrm{relu}(b + hi\,S_K(u_{-i}^+)),\
        \max_{v \in \{lo, hi\}} \mathrm{relu}(b + v u_i + hi\,S_{K-1}(u_{-i}^+)) - v,\
        \max_{v \in [lo, hi]} v - \mathrm{relu}(b + v u_i - hi\,S_{K-1}((-u_{-i})^+))\Big)

    The last term is concave in ``v``: its maximum is at ``lo``, ``hi`` or the kink where
    the ReLU argument crosses 0, and all three are evaluated.

    Parameters
    ----------
    encoder : object with ``W_enc`` (M, N) and ``b_enc`` (N,)
        E.g. a :class:`MinimaxEncoder` (arrays or torch tensors).
    D : array_like of shape (N, M)
    k : int
    magnitudes : (float, float)

    Returns
    -------
    errors : ndarray of shape (N,)

    Examples
    --------
    >>> from gaptheory.gap import MinimaxEncoder
    >>> encoder = MinimaxEncoder(W_enc=np.eye(2), b_enc=np.zeros(2))
    >>> worst_case_error(encoder, np.eye(2), 2).tolist()
    [0.0, 0.0]
    """
    if not _checked:
        D = check_dictionary(D)
        k = check_k(k, D.shape[0])
        magnitudes = _check_magnitudes(magnitudes)
    n_latents, n_dims = D.shape
    lo, hi = magnitudes
    W_enc, b_enc = _encoder_weights(encoder, n_dims, n_latents)
    U = D @ W_enc  # U[j, i] = u_j for latent i
    return np.array([_latent_error(U[:, i], i, b_enc[i], k, lo, hi) for i in range(n_latents)])


def _latent_error(u: np.ndarray, i: int, b: float, k: int, lo: float, hi: float) -> float:
    """Worst-case error of ``relu(w . x + b)`` on latent ``i`` over the box code set, from ``u = D w`` (N,)."""
    u_i, others = u[i], np.delete(u, i)[None, :]
    zero = max(b + hi * _top_sum(others, k)[0], 0.0)
    up_rest = b + hi * _top_sum(others, k - 1)[0]
    down_rest = b - hi * _top_sum(-others, k - 1)[0]
    candidates = [lo, hi]
    if u_i != 0 and lo < -down_rest / u_i < hi:
        candidates.append(-down_rest / u_i)
    over = max(max(v * u_i + up_rest, 0.0) - v for v in (lo, hi))
    under = max(v - max(v * u_i + down_rest, 0.0) for v in candidates)
    return max(zero, over, under)


def code_set_error(encoder, D, Z) -> np.ndarray:
    r"""Worst error per latent of the encoder on the explicit codes ``Z``:
    :math:`\max_{z \in Z} |\mathrm{relu}(z D W_{enc} + b_{enc}) - z|` column-wise.

    Parameters
    ----------
    encoder : object with ``W_enc`` (M, N) and ``b_enc`` (N,)
    D : array_like of shape (N, M)
    Z : array_like of shape (B, N)

    Returns
    -------
    errors : ndarray of shape (N,)
    """
    D = check_array(D, "D")
    Z = check_codes(Z, D.shape[0])
    W_enc, b_enc = _encoder_weights(encoder, D.shape[1], D.shape[0])
    return np.abs(np.maximum(Z @ D @ W_enc + b_enc, 0.0) - Z).max(axis=0)
