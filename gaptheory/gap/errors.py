r"""Exact worst-case error of a ReLU or JumpReLU encoder on a code set, in closed form.

:func:`worst_case_error` evaluates ``f(X @ W_enc + b_enc)`` on the box code set of codes with
at most K nonzeros in :math:`\{0\} \cup [lo, hi]` without enumerating it (the worst codes are
the top-K sums of :math:`u = D w`); :func:`worst_case_codes` returns those codes;
:func:`code_set_error` evaluates an encoder on an explicit code set. ``f`` is the ReLU, or, for
an encoder with a ``threshold`` (N,) attribute, the JumpReLU :math:`f(t) = t\,[t > \theta]`
(SAELens ``jumprelu``); both are nondecreasing, which is what the closed form needs.

References
----------
.. [1] ``proofs/T3_exact_lp.md``.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_array, check_codes, check_dictionary, check_k
from ..instances import _check_magnitudes


def _encoder_weights(encoder, n_dims: int, n_latents: int):
    """``(W_enc, b_enc, threshold)`` of an encoder; ``threshold`` is zeros (the ReLU) when it has none."""
    W_enc = check_array(getattr(encoder, "W_enc"), "encoder.W_enc")
    b_enc = check_array(getattr(encoder, "b_enc"), "encoder.b_enc", ndim=1)
    if W_enc.shape != (n_dims, n_latents) or b_enc.shape != (n_latents,):
        raise ValueError(
            f"encoder must have W_enc of shape (M, N) = {(n_dims, n_latents)} and b_enc of shape (N,); got "
            f"{W_enc.shape} and {b_enc.shape}. Fold a decoder bias in first: b_enc - b_dec @ W_enc."
        )
    threshold = getattr(encoder, "threshold", None)
    if threshold is None:
        return W_enc, b_enc, np.zeros(n_latents)
    threshold = check_array(threshold, "encoder.threshold", ndim=1)
    if threshold.shape != (n_latents,) or (threshold < 0).any():
        raise ValueError(
            f"encoder.threshold must be a nonnegative array of shape (N,) = ({n_latents},) (a JumpReLU "
            f"threshold per latent); got shape {threshold.shape} with minimum {threshold.min(initial=0.0):.3g}."
        )
    return W_enc, b_enc, threshold


def _activation(pre: np.ndarray, threshold) -> np.ndarray:
    r"""The JumpReLU :math:`t\,[t > \theta]`; with :math:`\theta = 0` it is the ReLU."""
    return np.where(pre > threshold, pre, 0.0)


def worst_case_error(encoder, D, k: int, *, magnitudes=(1.0, 1.0), _checked: bool = False) -> np.ndarray:
    r"""Exact worst-case error per latent of ``f(X @ W_enc + b_enc)`` over the box code set.

    For latent ``i`` with :math:`u = D w_i`, :math:`r^+ = b + hi\,S_{K-1}(u_{-i}^+)` and
    :math:`r^- = b - hi\,S_{K-1}((-u_{-i})^+)` (:math:`S_K` the sum of the K largest entries),
    the worst codes are explicit (no enumeration):

    .. math::
        \max\Big(f(b + hi\,S_K(u_{-i}^+)),\
        \sup_{v \in [lo, hi]} f(v u_i + r^+) - v,\
        \sup_{v \in [lo, hi]} v - f(v u_i + r^-)\Big)

    since ``f`` is nondecreasing, the error of an active latent is largest at the extreme rests
    :math:`r^\pm`. Each ``sup`` is piecewise linear in ``v`` with one break, where the argument
    crosses the threshold :math:`\theta` (0 for the ReLU): it is taken at ``lo``, ``hi`` and the
    break, with the JumpReLU's limit :math:`\theta` from above in the first (a supremum, not
    attained there) and its value 0 in the second.

    Parameters
    ----------
    encoder : object with ``W_enc`` (M, N), ``b_enc`` (N,) and optionally ``threshold`` (N,)
        E.g. a :class:`MinimaxEncoder` or :class:`JumpReLUEncoder` (arrays or torch tensors).
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
    W_enc, b_enc, threshold = _encoder_weights(encoder, n_dims, n_latents)
    U = D @ W_enc  # U[j, i] = u_j for latent i
    return np.array([_latent_worst(U[:, i], i, b_enc[i], k, lo, hi, threshold[i])[0] for i in range(n_latents)])


def worst_case_codes(encoder, D, k: int, *, magnitudes=(1.0, 1.0)) -> np.ndarray:
    r"""For each latent, a code of the box code set at which a ReLU encoder's error is its worst.

    Row ``i`` is the code of the largest of the three terms of :func:`worst_case_error`: the
    K largest :math:`u_j^+` (``j != i``) at ``hi``; or latent ``i`` at the maximising ``v`` with
    the K - 1 largest :math:`u_j^+`, or the K - 1 largest :math:`(-u_j)^+`, at ``hi``. Such codes
    are witnesses: an encoder that agrees with this one's pre-activations but may zero some of
    them (TopK) errs at least as much at the third kind.

    Parameters
    ----------
    encoder : object with ``W_enc`` (M, N) and ``b_enc`` (N,); no ``threshold`` (a JumpReLU's
        supremum can sit at its jump, where no code attains it)
    D : array_like of shape (N, M)
    k : int
    magnitudes : (float, float)

    Returns
    -------
    codes : ndarray of shape (N, N)
        Row ``i`` attains latent ``i``'s worst case: its error there,
        ``|encoder.encode(codes[i] @ D)[i] - codes[i, i]|``, equals
        ``worst_case_error(encoder, D, k, magnitudes=magnitudes)[i]`` to round-off.

    Examples
    --------
    >>> from gaptheory.gap import MinimaxEncoder
    >>> encoder = MinimaxEncoder(W_enc=np.zeros((2, 2)), b_enc=np.zeros(2))
    >>> worst_case_codes(encoder, np.eye(2), 1).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    D = check_dictionary(D)
    k = check_k(k, D.shape[0])
    lo, hi = _check_magnitudes(magnitudes)
    if getattr(encoder, "threshold", None) is not None:
        raise TypeError("worst_case_codes takes a ReLU encoder (no threshold): a JumpReLU's worst case can be a "
                        "supremum at its jump that no code attains; use worst_case_error for its value.")
    W_enc, b_enc, _ = _encoder_weights(encoder, D.shape[1], D.shape[0])
    U = D @ W_enc
    codes = np.zeros((D.shape[0], D.shape[0]))
    for i in range(D.shape[0]):
        _, v, chosen = _latent_worst(U[:, i], i, b_enc[i], k, lo, hi, 0.0)
        codes[i, chosen], codes[i, i] = hi, v
    return codes


def _latent_worst(u: np.ndarray, i: int, b: float, k: int, lo: float, hi: float, threshold: float = 0.0):
    """``(error, v, chosen)``: the worst-case error of ``f(w . x + b)`` on latent ``i`` over the box
    code set, from ``u = D w`` (N,), and the code where it is attained (approached, at a JumpReLU
    jump): latent ``i`` at ``v``, the latents ``chosen`` at ``hi``."""
    others = np.delete(np.arange(len(u)), i)
    u_others = u[others]
    order = np.argsort(-u_others, kind="stable")

    def rest(count: int, sign: float) -> np.ndarray:
        """Latents (others) of the ``count`` largest positive ``sign * u_j``."""
        chosen = order[:count] if sign > 0 else order[::-1][:count]
        return others[chosen[sign * u_others[chosen] > 0]]

    def f(pre: float) -> float:
        return pre if pre > threshold else 0.0

    zero_rest = rest(k, 1.0)
    zero = f(b + hi * u[zero_rest].sum())
    up, down = rest(k - 1, 1.0), rest(k - 1, -1.0)
    up_rest, down_rest = b + hi * u[up].sum(), b + hi * u[down].sum()
    candidates = [(zero, 0.0, zero_rest)]
    for v in (lo, hi):
        candidates.append((f(v * u[i] + up_rest) - v, v, up))
        candidates.append((v - f(v * u[i] + down_rest), v, down))
    if u[i] != 0:
        # At the break the argument is the threshold: the sup of f there is threshold (from above)
        # for the over-estimate and its value 0 for the under-estimate.
        for rest_sum, chosen, sign in ((up_rest, up, 1.0), (down_rest, down, -1.0)):
            v = (threshold - rest_sum) / u[i]
            if lo < v < hi:
                candidates.append((threshold - v if sign > 0 else v, v, chosen))
    return max(candidates, key=lambda candidate: candidate[0])


def code_set_error(encoder, D, Z) -> np.ndarray:
    r"""Worst error per latent of the encoder on the explicit codes ``Z``:
    :math:`\max_{z \in Z} |f(z D W_{enc} + b_{enc}) - z|` column-wise (``f`` the ReLU, or the
    JumpReLU of the encoder's ``threshold``).

    Parameters
    ----------
    encoder : object with ``W_enc`` (M, N), ``b_enc`` (N,) and optionally ``threshold`` (N,)
    D : array_like of shape (N, M)
    Z : array_like of shape (B, N)

    Returns
    -------
    errors : ndarray of shape (N,)
    """
    D = check_array(D, "D")
    Z = check_codes(Z, D.shape[0])
    W_enc, b_enc, threshold = _encoder_weights(encoder, D.shape[1], D.shape[0])
    return np.abs(_activation(Z @ D @ W_enc + b_enc, threshold) - Z).max(axis=0)
