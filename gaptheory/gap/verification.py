r"""Weak-duality certificates of :math:`\varepsilon^*_i` and their exact verification.

A :class:`GapCertificate` lists binding codes with nonnegative weights (read off the LP duals);
:func:`verify_certificate` re-derives from it, in exact rational arithmetic and without the
solver, a lower bound on :math:`\varepsilon^*_i` (a :class:`CertificateCheck`).

References
----------
.. [1] ``proofs/T3_exact_lp.md`` (weak duality for the gap LP).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import scipy.optimize
import scipy.sparse

from .. import certificates
from .._threads import one_blas_thread
from .._validation import check_array, check_codes, sparse_rows, times_power_of_two
from ..instances import _check_magnitudes


#: Constraint kinds in a certificate: a zero-labelled code (upper bound ``<= eps``), and the
#: lower / upper sides for a code whose latent ``i`` is active (``>= v - eps`` / ``<= v + eps``).
KIND_ZERO, KIND_LOWER, KIND_UPPER = 0, 1, 2
_SIGN = np.array([-1.0, 1.0, -1.0])  # sign of each kind in the weak-duality combination


@dataclass(frozen=True)
class GapCertificate:
    r"""Weak-duality certificate that :math:`\varepsilon^*_i` is at least a value.

    For each code ``codes[r]`` with label :math:`v = z_i` and kind ``kinds[r]`` every
    encoder with worst error :math:`\varepsilon < \min v` satisfies, with
    :math:`t = w \cdot (z D) + b`: ``KIND_ZERO`` :math:`t \le \varepsilon`,
    ``KIND_LOWER`` :math:`t \ge v - \varepsilon`, ``KIND_UPPER`` :math:`t \le v + \varepsilon`.
    If the weights balance (:math:`\sum_r \sigma_r y_r z_r D = 0`, :math:`\sum_r \sigma_r y_r = 0`,
    :math:`\sum_r y_r = 1`, signs :math:`\sigma` +1 for lower, -1 otherwise), summing the
    inequalities gives :math:`\varepsilon \ge \sum_{lower} y_r v_r - \sum_{upper} y_r v_r`.

    Attributes
    ----------
    latent : int
    codes : scipy.sparse.csr_array of shape (m, N)
        Given dense or sparse; kept as CSR (a code has at most K nonzeros, so a certificate of
        M + 2 codes takes O(MK) memory, not O(MN)).
    kinds : ndarray of shape (m,)
    weights : ndarray of shape (m,)
    """

    latent: int
    codes: scipy.sparse.csr_array = field(repr=False)
    kinds: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)

    def __post_init__(self):
        object.__setattr__(self, "codes", sparse_rows(self.codes, "codes"))

    @property
    def labels(self) -> np.ndarray:
        """(m,) the codes' entries :math:`v_r = z_{r,i}` at the certificate's latent."""
        return _column(self.codes, self.latent)


def _column(codes: scipy.sparse.csr_array, i: int) -> np.ndarray:
    """(m,) column ``i`` of the sparse rows ``codes``, dense."""
    return codes[:, [i]].toarray().ravel()


@dataclass(frozen=True)
class CertificateCheck:
    """Outcome of :func:`verify_certificate`.

    Attributes
    ----------
    lower_bound : float
        Certified lower bound on eps*_i, the largest float64 not above the exact bound
        (``-inf`` when the certificate is invalid).
    residual : float
        Relative violation of the dual equalities by the float re-fit of the weights (a
        diagnostic; validity is decided exactly).
    valid : bool
        True only when exact rational weights were found (see :func:`verify_certificate`).
    reason : str
    exact_bound : Fraction or None
        The certified bound as an exact rational: the value the exact weights prove or, when they
        were enclosed rather than formed, an exact lower bound on it.
    exact_weights : tuple of Fraction or None
        Exact weights on the certificate's codes (or on :attr:`codes`) satisfying the dual
        equalities exactly; None when a large square system was settled by an exact enclosure of
        its unique solution (``certificates.enclose_solution``), which proves the weights exist
        and are nonnegative without forming them.
    codes : scipy.sparse.csr_array or None
    kinds : ndarray or None
        The codes and kinds the exact weights belong to when they are not the certificate's:
        its codes with positive float weight, then the codes added to cancel round-off.
    """

    lower_bound: float
    residual: float
    valid: bool
    reason: str
    exact_bound: Fraction | None = field(default=None, repr=False)
    exact_weights: tuple | None = field(default=None, repr=False)
    codes: np.ndarray | None = field(default=None, repr=False)
    kinds: np.ndarray | None = field(default=None, repr=False)


def _check_block(D: np.ndarray, certificates: list, k, magnitudes, codes) -> list:
    with one_blas_thread():  # latents in parallel, as their LPs are (relu_minimax_gap)
        return _checks(D, certificates, k, magnitudes, codes)


def _checks(D: np.ndarray, certificates: list, k, magnitudes, codes) -> list:
    if codes is not None:
        return [verify_certificate(certificate, D, codes=codes) for certificate in certificates]
    checks = []
    for certificate in certificates:
        check = verify_certificate(certificate, D, k=k, magnitudes=magnitudes)
        if magnitudes[0] == magnitudes[1] and _short_of_its_claim(check, certificate, magnitudes[1]):
            second = _compact_lp_check(certificate.latent, D, k, magnitudes)
            if second is not None and second.lower_bound > check.lower_bound:
                check = second
        checks.append(check)
    return checks


#: A certificate proves "less than it claims" when its exact bound is below its float bound
#: by more than this times the code magnitude (the agreement ``GapResult.exact`` asks for).
CLAIM_ATOL = 1e-7


def _short_of_its_claim(check: CertificateCheck, certificate: GapCertificate, hi: float) -> bool:
    """Whether the exact check settled on weaker weights than the certificate's own (which a
    degenerate basis-pursuit vertex can cause, ``proofs/T3_exact_lp.md`` 3f)."""
    y = np.asarray(certificate.weights, dtype=np.float64)
    if not check.valid or len(y) == 0 or y.sum() <= 0:
        return False
    value = _bound_values(np.asarray(certificate.kinds), certificate.labels)
    return check.lower_bound < float(value @ y) / float(y.sum()) - CLAIM_ATOL * hi


def _bound_values(kinds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each code's term of the weak-duality bound ``value @ y``: +label (lower), -label (upper), 0 (zero)."""
    return np.where(kinds == KIND_LOWER, labels, np.where(kinds == KIND_UPPER, -labels, 0.0))


def _compact_lp_check(i: int, D: np.ndarray, k: int, magnitudes) -> CertificateCheck | None:
    """The exact check of latent ``i``'s compact-LP (HiGHS) certificate for binary codes, as a
    second opinion; its codes are reported in the check."""
    from .lp import _compact_rows, _magnitude_scale, _solve_latent

    scale = _magnitude_scale(magnitudes[1])
    unit = magnitudes[1] / scale
    outcome = _solve_latent(D, i, _compact_rows(k, D.shape[0], unit, unit), unit)
    if outcome is None:
        return None
    certificate = outcome[3]
    codes = certificate.codes * scale  # a power of two: exact
    check = verify_certificate(GapCertificate(i, codes, certificate.kinds, certificate.weights), D, k=k,
                               magnitudes=magnitudes)
    if check.codes is not None:
        return check
    return dataclasses.replace(check, codes=codes, kinds=certificate.kinds,
                               reason=check.reason + " (on the compact LP's certificate: the given one proved less)")


def verify_certificate(certificate: GapCertificate, D, *, k: int | None = None, magnitudes=(1.0, 1.0), codes=None) -> CertificateCheck:
    r"""Prove a lower bound on :math:`\varepsilon^*_i` from a certificate, in exact rational arithmetic.

    Every float64 entry of ``D`` and of the certificate's codes is read as the exact dyadic
    rational it is; the certificate is then checked for that exact rational ``D`` (no
    tolerance, no solver):

    1. ``D``'s rows are unit-norm to float64 round-off,
       :math:`|\mathrm{fl}(\|d_j\|^2) - 1| \le 2 (M + 4) u` (``certificates.unit_norm_tolerance``;
       a row that float64 normalisation left at :math:`1 + \delta` passes; a scaled ``D`` fails).
       The bound is a statement about the given ``D``, which is the normalised dictionary up to
       this round-off; it is not transferred to the irrational exactly-normalised rows.
    2. Every code lies in the code set exactly (at most ``k`` nonzeros, each in ``[lo, hi]``,
       or equal to a row of ``codes``), and its label :math:`v = z_i` matches its kind.
    3. Nonnegative float weights are re-fitted on the codes (NNLS, pinned to the bound the
       given weights claim, then unpinned), and on the codes each fit (and the given weights)
       uses, the dual equalities
       :math:`\sum_r \sigma_r y_r z_r D = 0,\ \sum_r \sigma_r y_r = 0,\ \sum_r y_r = 1` are
       solved exactly over the rationals (``certificates.exact_dual_weights``); the first exact
       solution with :math:`y \ge 0` is kept. The float weights only choose the codes. A square
       system of ``certificates.ENCLOSURE_MIN_SIZE`` rows or more is first settled by an exact
       enclosure of its unique solution, which proves it nonnegative without forming it.
    4. Failing that (box sets, K >= 2), the float weights themselves, read as exact rationals,
       are balanced exactly by adding the codes :math:`hi\,e_i` and :math:`hi\,(e_i + e_j)`
       with exactly solved weights (:func:`_corrected`): the case of a float ``D`` that breaks,
       by round-off, an exact linear relation of the real matrix it stands for.

    Weak duality then gives, for every encoder (``proofs/T3_exact_lp.md``),

    .. math:: \varepsilon_i \ge \max\Big(0,\ \min\Big(\sum_{lower} y_r v_r - \sum_{upper} y_r v_r,\ \min_{lower} v_r\Big)\Big),

    computed exactly and rounded down to a float. A certificate with no codes proves the
    trivial bound 0. An invertible ``D`` (:math:`\varepsilon^* = 0`) admits no exact
    certificate of a positive bound, however close to singular it is in floating point.

    Parameters
    ----------
    certificate : GapCertificate
    D : array_like of shape (N, M)
    k : int, optional
        The sparsity of the code set (box sets); ignored when ``codes`` is given.
    magnitudes : (float, float)
    codes : array_like of shape (B, N), optional
        The explicit code set, for certificates from :func:`relu_minimax_gap_codes`.

    Returns
    -------
    check : CertificateCheck
        ``valid`` only when the exact check passed; ``exact_bound`` and ``exact_weights`` hold
        the exact rationals.

    Examples
    --------
    >>> from gaptheory.gap import relu_minimax_gap
    >>> D = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> result = relu_minimax_gap(D, 2, latents=[2])
    >>> check = verify_certificate(result.certificates[0], D, k=2)
    >>> check.valid, bool(round(check.lower_bound, 9) == round(result.eps[2], 9))
    (True, True)
    """
    D = check_array(D, "D")
    n_latents, n_dims = D.shape
    i = certificate.latent
    Z = certificate.codes
    if Z.shape[1] != n_latents:
        return invalid(f"the certificate's codes have {Z.shape[1]} columns; D has N = {n_latents} rows")
    kinds = np.asarray(certificate.kinds, dtype=np.int64)
    y = np.asarray(certificate.weights, dtype=np.float64)

    def invalid(reason, residual=math.inf):
        return CertificateCheck(-math.inf, residual, False, reason)

    deviation = certificates.unit_norm_deviation(D)
    if not deviation.max() <= certificates.unit_norm_tolerance(n_dims):
        worst = int(np.argmax(deviation))
        return invalid(
            f"D's row {worst} has |norm^2 - 1| = {deviation[worst]:.3g}, over the float64 round-off bound "
            f"{certificates.unit_norm_tolerance(n_dims):.3g}: the certificate is for unit atoms; pass "
            "gaptheory.instances.normalize_atoms(D)"
        )
    if len(y) != Z.shape[0] or len(kinds) != Z.shape[0]:
        return invalid("inconsistent certificate: codes, kinds and weights differ in length")
    if not np.isfinite(Z.data).all() or not np.isfinite(y).all() or (y < 0).any() or not np.isin(kinds, [KIND_ZERO, KIND_LOWER, KIND_UPPER]).all():
        return invalid("codes and weights must be finite, weights >= 0, kinds in {0, 1, 2}")
    if codes is not None:
        allowed = check_codes(codes, n_latents, name="codes")
        member = _rows_in(Z, allowed)
        if not member.all():
            return invalid(f"certificate code {int(np.argmin(member))} is not a row of the code set")
    else:
        if k is None:
            raise ValueError("verify_certificate needs k (box code sets) or codes (explicit sets).")
        lo, hi = _check_magnitudes(magnitudes)
        if ((Z.data < lo) | (Z.data > hi)).any() or (np.diff(Z.indptr) > k).any():
            return invalid(f"a certificate code has more than k={k} nonzeros or an entry outside {{0}} U [{lo}, {hi}]")
    if Z.shape[0] == 0:
        return CertificateCheck(0.0, 0.0, True, "trivial certificate: eps >= 0", Fraction(0), ())
    labels = certificate.labels
    if (labels[kinds == KIND_ZERO] != 0).any() or (labels[kinds != KIND_ZERO] <= 0).any():
        return invalid("labels do not match kinds (zero rows need z_i = 0, the others z_i > 0)")
    sign = _SIGN[kinds]
    # The checks below are homogeneous in the codes (equalities) and linear in the labels
    # (the bound): run them on the codes divided by a power of two (exact) that brings the
    # largest entry into [1, 2), where the float re-fits are not lost to underflow, and scale
    # the exact bound back.
    exponent = int(np.frexp(np.abs(Z.data).max(initial=0.0))[1]) - 1
    Z = times_power_of_two(Z, -exponent)
    value = _bound_values(kinds, times_power_of_two(labels, -exponent))
    # Float re-fits choose the codes for the exact solve: y >= 0 closest to the equalities,
    # pinned to the bound the given weights claim, and unpinned.
    A = np.vstack([(sign[:, None] * (Z @ D)).T, sign, np.ones(len(y))])  # (M + 2, m)
    target = np.zeros(A.shape[0])
    target[-1] = 1.0
    claimed = float(value @ y) / max(float(y.sum()), np.finfo(float).tiny)
    pinned, _ = scipy.optimize.nnls(np.vstack([A, value]), np.r_[target, claimed], maxiter=50 * len(y))
    scale = np.abs(A).sum(axis=1).max()
    residual = float(np.abs(A @ pinned - target).max()) / scale

    def free():  # the unpinned re-fit, fitted only when the guesses before it do not settle
        return scipy.optimize.nnls(A, target, maxiter=50 * len(y))[0]

    exact = certificates.exact_dual_weights(Z, sign, value, D, [pinned, y, free], pin=claimed)
    proven_codes = proven_kinds = None
    if exact is None and codes is None and k >= 2:
        exact, proven_codes, proven_kinds = _corrected(Z, kinds, sign, value, D, i, float(np.ldexp(hi, -exponent)),
                                                       [pinned, y])
    if exact is None:
        return invalid("no nonnegative weights on the certificate's codes satisfy the dual equalities exactly", residual)
    weights, bound = exact
    bound = bound * Fraction(2) ** exponent
    if proven_kinds is not None:
        proven_codes = times_power_of_two(proven_codes, exponent)
        labels, kinds = _column(proven_codes, i), proven_kinds
    lower_labels = labels[kinds == KIND_LOWER]
    if lower_labels.size:
        bound = min(bound, Fraction(float(lower_labels.min())))
    bound = max(bound, Fraction(0))
    reason = "ok" if proven_codes is None else "ok, with codes hi e_i, hi (e_i + e_j) added to cancel round-off"
    if weights is None:
        reason = "ok, the exact weights enclosed (unique, nonnegative), not formed"
    return CertificateCheck(certificates.floor_float(bound), residual, True, reason, bound,
                            None if weights is None else tuple(weights), proven_codes, proven_kinds)


def _rows_in(Z: scipy.sparse.csr_array, allowed: np.ndarray) -> np.ndarray:
    """(m,) bool: whether each row of ``Z`` equals a row of ``allowed`` (B, N), by exact bytes
    (one hash lookup per row, not an (m, B, N) comparison)."""
    known = {np.ascontiguousarray(row).tobytes() for row in allowed + 0.0}  # + 0.0: -0.0 as 0.0
    return np.array([(Z[[r]].toarray().ravel() + 0.0).tobytes() in known for r in range(Z.shape[0])], dtype=bool)


def _corrected(Z, kinds, sign, value, D, i, hi, guesses):
    r"""Exact weights from float ones that balance only to round-off: the residual is cancelled
    by the codes :math:`hi\,e_i` and :math:`hi\,(e_i + e_j)` (in every box set with K >= 2, each
    as a lower or an upper row; ``certificates.corrected_dual_weights``).

    Needed when the float D breaks, by round-off, a linear relation its real counterpart has
    (e.g. a partial DCT with two atoms equal in the reals): the solver's binding codes then
    balance for the real D and miss the float one by ~1e-16. Returns ``((weights, bound), codes,
    kinds)`` or ``(None, None, None)``.
    """
    n_latents = D.shape[0]
    # Row i: hi e_i; row j != i: hi (e_i + e_j).
    rows = np.r_[np.arange(n_latents), np.delete(np.arange(n_latents), i)]
    columns = np.r_[np.arange(n_latents), np.full(n_latents - 1, i)]
    extras = scipy.sparse.csr_array((np.full(2 * n_latents - 1, hi), (rows, columns)), shape=(n_latents, n_latents))
    for guess in guesses:
        keep = np.flatnonzero(np.asarray(guess) > 0)
        if not keep.size:
            continue
        found = certificates.corrected_dual_weights(Z[keep], sign[keep], value[keep], D, guess[keep], extras, np.full(n_latents, hi))
        if found is None:
            continue
        codes, signs, weights, bound = found
        added = np.where(signs[keep.size:] > 0, KIND_LOWER, KIND_UPPER)
        return (weights, bound), codes, np.r_[kinds[keep], added].astype(np.int64)
    return None, None, None
