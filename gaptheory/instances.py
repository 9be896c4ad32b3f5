r"""Compressed-sensing instances: dictionaries, K-sparse codes and their invariants.

Conventions (``../shared/NOTATION.md``): a dictionary ``D`` has shape (N, M) with
unit-norm rows (atoms, the SAELens ``W_dec`` layout); codes ``Z`` have shape (B, N)
with exactly K nonzeros per row; observations are ``X = Z @ D`` of shape (B, M).
Everything here is float64 and every random function takes ``seed`` (an int or a
``numpy.random.Generator``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.fft

from ._validation import (
    as_generator,
    check_array,
    check_choice,
    check_dictionary,
    check_int,
    check_bool,
    check_k,
)

#: Largest number of atom subsets an exhaustive search (``spark``, exact ``rip_constant``)
#: may visit: about a second of batched linear algebra per million small subsets on 2 cores.
MAX_EXHAUSTIVE_SUPPORTS = 2_000_000

#: Relative singular-value threshold below which a set of atoms counts as linearly
#: dependent; well above float64 round-off (~1e-16 * M) and far below any generic gap.
RANK_RTOL = 1e-10

#: Subsets processed per batched eigen/SVD call, to keep memory bounded.
_SUBSET_CHUNK = 20_000

DICTIONARY_KINDS = ("gaussian", "rademacher", "dct", "identity_dct")


def normalize_atoms(D) -> np.ndarray:
    r"""Return ``D`` with every row scaled to unit Euclidean norm.

    .. math:: d_i \leftarrow d_i / \|d_i\|_2

    Each row is first rescaled by a power of two (exactly) to a largest entry in
    [0.5, 1), so rows of any finite scale (1e-300 to 1e300) normalise instead of
    overflowing or underflowing, and ``normalize_atoms(c * D)`` equals
    ``normalize_atoms(D)`` to the last bit for every power of two ``c``.

    Parameters
    ----------
    D : array_like of shape (N, M)
        Atoms as rows. A zero row has no direction and raises ``ValueError``.
        Duplicated atoms are kept (they are valid, with coherence 1).

    Returns
    -------
    D : ndarray of shape (N, M), float64, unit-norm rows.
    """
    D = check_array(D, "D")
    peak = np.max(np.abs(D), axis=1, keepdims=True)
    zero = np.flatnonzero(peak[:, 0] == 0)
    if zero.size:
        raise ValueError(
            f"D has zero rows {zero[:10].tolist()}; a zero atom has no direction. "
            "Drop those rows (D[D.any(axis=1)]) before normalising."
        )
    D = np.ldexp(D, -np.frexp(peak)[1])
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def random_dictionary(N: int, M: int, kind: str = "gaussian", *, seed) -> np.ndarray:
    r"""Draw a dictionary of ``N`` unit-norm atoms in :math:`\mathbb{R}^M`.

    Parameters
    ----------
    N : int
        The number of atoms (rows).
    M : int
        The ambient dimension (columns).
    kind : {"gaussian", "rademacher", "dct", "identity_dct"}
        ``gaussian``: i.i.d. N(0, 1) entries, rows normalised (uniform on the sphere).
        ``rademacher``: i.i.d. +-1 entries scaled by 1/sqrt(M).
        ``dct``: a partial DCT, the classical compressed-sensing measurement: the N
        orthonormal DCT-II basis vectors of R^N restricted to M random coordinates,
        then renormalised (needs N >= M).
        ``identity_dct``: the union of two orthonormal bases of R^M, spikes and DCT-II
        (N = 2M required); deterministic with coherence about sqrt(2/M), the standard
        example where the coherence recovery condition holds for K > 1 (Donoho & Huo 2001).
    seed : int or numpy.random.Generator

    Returns
    -------
    D : ndarray of shape (N, M), float64, unit-norm rows.

    Examples
    --------
    >>> D = random_dictionary(16, 8, seed=0)
    >>> D.shape, bool(np.allclose(np.linalg.norm(D, axis=1), 1.0))
    ((16, 8), True)
    """
    N = check_int(N, "N", minimum=1)
    M = check_int(M, "M", minimum=1)
    check_choice(kind, "kind", DICTIONARY_KINDS)
    rng = as_generator(seed)
    if kind == "gaussian":
        D = rng.standard_normal((N, M))
    elif kind == "rademacher":
        D = rng.choice(np.array([-1.0, 1.0]), size=(N, M))
    elif kind == "dct":
        if N < M:
            raise ValueError(
                f"kind='dct' restricts the N-point DCT to M coordinates and needs N >= M; got "
                f"N={N}, M={M}. Use kind='gaussian' for N < M."
            )
        basis = scipy.fft.dct(np.eye(N), norm="ortho", axis=0)  # rows: DCT-II basis vectors
        coordinates = np.sort(rng.choice(N, size=M, replace=False))
        D = basis[:, coordinates]
        if (np.linalg.norm(D, axis=1) < 1e-12).any():
            # Rare: some basis vector vanishes on the chosen coordinates; redraw them.
            return random_dictionary(N, M, "dct", seed=rng)
    else:  # identity_dct
        if N != 2 * M:
            raise ValueError(
                f"kind='identity_dct' is the union of two bases of R^M and needs N = 2M; got "
                f"N={N}, M={M}. Set N={2 * M}."
            )
        D = np.vstack([np.eye(M), scipy.fft.dct(np.eye(M), norm="ortho", axis=0)])
    return normalize_atoms(D)


def sparse_codes(
    B: int,
    N: int,
    K: int,
    *,
    seed,
    nonnegative: bool = True,
    magnitudes: tuple[float, float] = (0.5, 1.5),
) -> np.ndarray:
    r"""Draw ``B`` codes with exactly ``K`` nonzeros each, on uniformly random supports.

    Each nonzero has magnitude uniform in ``[lo, hi]``; with ``nonnegative=False`` it
    also gets a uniformly random sign.

    Parameters
    ----------
    B, N, K : int
        Rows, latents and nonzeros per row, with ``1 <= K <= N``.
    seed : int or numpy.random.Generator
    nonnegative : bool
        Nonnegative codes, as an SAE with a ReLU produces.
    magnitudes : (float, float)
        ``(lo, hi)`` with ``0 < lo <= hi``; ``lo = hi`` gives constant magnitudes.

    Returns
    -------
    Z : ndarray of shape (B, N), float64.

    Examples
    --------
    >>> Z = sparse_codes(4, 10, 3, seed=0)
    >>> (Z != 0).sum(axis=1).tolist()
    [3, 3, 3, 3]
    """
    B = check_int(B, "B", minimum=1)
    N = check_int(N, "N", minimum=1)
    K = check_k(K, N)
    nonnegative = check_bool(nonnegative, "nonnegative")
    lo, hi = _check_magnitudes(magnitudes)
    rng = as_generator(seed)
    # argsort of i.i.d. uniforms gives a uniformly random K-subset per row, vectorised.
    supports = np.argsort(rng.random((B, N)), axis=1)[:, :K]
    values = rng.uniform(lo, hi, size=(B, K))
    if not nonnegative:
        values *= rng.choice(np.array([-1.0, 1.0]), size=(B, K))
    Z = np.zeros((B, N))
    np.put_along_axis(Z, supports, values, axis=1)
    return Z


def _check_magnitudes(magnitudes) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in magnitudes)
    except (TypeError, ValueError):
        raise ValueError(f"magnitudes must be a pair (lo, hi); got {magnitudes!r}.") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"magnitudes=(lo, hi) must satisfy 0 < lo <= hi; got {magnitudes!r}.")
    return lo, hi


@dataclass(frozen=True)
class Instance:
    r"""A compressed-sensing instance: dictionary, codes and observations ``X = Z @ D``.

    Attributes
    ----------
    D : ndarray of shape (N, M)
    Z : ndarray of shape (B, N), K nonzeros per row
    X : ndarray of shape (B, M)
    K : int
        Nonzeros per row of ``Z``.
    kind : str
        How ``D`` was drawn (see :func:`random_dictionary`).
    seed : int or None
    nonnegative : bool
    magnitudes : (float, float)
    """

    D: np.ndarray = field(repr=False)
    Z: np.ndarray = field(repr=False)
    X: np.ndarray = field(repr=False)
    K: int
    kind: str = "gaussian"
    seed: int | None = None
    nonnegative: bool = True
    magnitudes: tuple[float, float] = (0.5, 1.5)

    def __repr__(self) -> str:
        # The call that rebuilds this instance (exactly, when it was drawn from an int seed).
        return (
            f"make_instance(N={self.N}, M={self.M}, K={self.K}, B={self.B}, kind={self.kind!r}, "
            f"seed={self.seed!r}, nonnegative={self.nonnegative!r}, magnitudes={self.magnitudes!r})"
        )

    @property
    def N(self) -> int:
        """Latents (atoms)."""
        return self.D.shape[0]

    @property
    def M(self) -> int:
        """Ambient dimension."""
        return self.D.shape[1]

    @property
    def B(self) -> int:
        """Rows (observations)."""
        return self.Z.shape[0]


def make_instance(
    N: int,
    M: int,
    K: int,
    B: int = 256,
    *,
    kind: str = "gaussian",
    seed,
    nonnegative: bool = True,
    magnitudes: tuple[float, float] = (0.5, 1.5),
) -> Instance:
    """Draw ``D`` then ``Z`` from one seed and return the :class:`Instance` with ``X = Z @ D``.

    Examples
    --------
    >>> inst = make_instance(16, 8, 3, 32, seed=0)
    >>> inst.X.shape, inst.K
    ((32, 8), 3)
    """
    N = check_int(N, "N", minimum=1)
    K = check_k(K, N)
    rng = as_generator(seed)
    D = random_dictionary(N, M, kind, seed=rng)
    Z = sparse_codes(B, N, K, seed=rng, nonnegative=nonnegative, magnitudes=magnitudes)
    return Instance(
        D=D,
        Z=Z,
        X=Z @ D,
        K=K,
        kind=kind,
        seed=seed if isinstance(seed, int) else None,
        nonnegative=nonnegative,
        magnitudes=_check_magnitudes(magnitudes),
    )


def mutual_coherence(D) -> float:
    r"""Largest absolute inner product between two distinct unit atoms.

    .. math:: \mu(D) = \max_{i \ne j} |\langle d_i, d_j \rangle|

    Parameters
    ----------
    D : array_like of shape (N, M), unit-norm rows, N >= 2.

    References
    ----------
    .. [1] Donoho & Elad (2003), "Optimally sparse representation in general
       (nonorthogonal) dictionaries via l1 minimization", PNAS 100(5).

    Examples
    --------
    >>> mutual_coherence(np.eye(3))
    0.0
    """
    D = check_dictionary(D)
    if D.shape[0] < 2:
        raise ValueError("mutual coherence needs at least two atoms; got N=1.")
    gram = np.abs(D @ D.T)
    np.fill_diagonal(gram, 0.0)
    return float(gram.max())


def welch_bound(N: int, M: int) -> float:
    r"""Welch lower bound on the coherence of ``N`` unit vectors in :math:`\mathbb{R}^M`.

    .. math:: \mu(D) \ge \sqrt{\frac{N - M}{M (N - 1)}}

    Zero when ``N <= M`` (orthonormal atoms exist). Equality holds exactly for
    equiangular tight frames.

    References
    ----------
    .. [1] Welch (1974), "Lower bounds on the maximum cross correlation of signals",
       IEEE Trans. Inf. Theory 20(3).

    Examples
    --------
    >>> round(welch_bound(3, 2), 6)  # the Mercedes-Benz frame attains 1/2
    0.5
    """
    N = check_int(N, "N", minimum=2)
    M = check_int(M, "M", minimum=1)
    if N <= M:
        return 0.0
    return math.sqrt((N - M) / (M * (N - 1)))


def _count_subsets(n: int, sizes) -> int:
    return sum(math.comb(n, s) for s in sizes)


def _subset_chunks(n: int, size: int):
    """Yield arrays of shape (C, size) holding all ``size``-subsets of range(n), in chunks."""
    iterator = itertools.combinations(range(n), size)
    while True:
        chunk = list(itertools.islice(iterator, _SUBSET_CHUNK))
        if not chunk:
            return
        yield np.asarray(chunk, dtype=np.intp)


def spark(D, *, max_subsets: int = MAX_EXHAUSTIVE_SUPPORTS) -> int | float:
    r"""Exact spark: the smallest number of linearly dependent atoms.

    Enumerates subsets of size 1, 2, ... and returns the first size containing a
    rank-deficient subset (relative singular-value threshold ``RANK_RTOL``). If no
    subset of size <= min(N, M + 1) is dependent (only possible when N <= M, all atoms
    independent), returns ``math.inf``: no dependent set exists, so every representation
    is unique.

    Uniqueness: every K-sparse representation is the unique sparsest one when
    ``K < spark / 2``; and ``spark >= 1 + 1 / mu(D)`` (Donoho & Elad 2003).

    Parameters
    ----------
    D : array_like of shape (N, M), unit-norm rows.
    max_subsets : int
        Refuse (``ValueError``) when the worst-case enumeration would visit more
        subsets than this; the cheap certified alternative is ``1 + 1 / mutual_coherence(D)``.

    Examples
    --------
    >>> spark(np.vstack([np.eye(2), [[2 ** -0.5, 2 ** -0.5]]]))
    3
    """
    D = check_dictionary(D)
    N, M = D.shape
    largest = min(N, M + 1)
    work = _count_subsets(N, range(1, largest + 1))
    max_subsets = check_int(max_subsets, "max_subsets", minimum=1)
    if work > max_subsets:
        raise ValueError(
            f"exact spark of a ({N}, {M}) dictionary enumerates up to {work:.3g} "
            f"atom subsets, over max_subsets={max_subsets}. Use the lower bound "
            "1 + 1/mutual_coherence(D), or raise max_subsets if you can wait."
        )
    scale = np.linalg.norm(D, 2)
    for size in range(1, largest + 1):
        for subsets in _subset_chunks(N, size):
            singular = np.linalg.svd(D[subsets], compute_uv=False)  # (C, min(size, M))
            smallest = singular[:, -1] if size <= M else np.zeros(len(subsets))
            if (smallest <= RANK_RTOL * scale).any():
                return size
    return math.inf


def rip_constant(
    D,
    K: int,
    method: str = "exact",
    *,
    n_subsets: int = 2000,
    seed=0,
    max_subsets: int = MAX_EXHAUSTIVE_SUPPORTS,
) -> float:
    r"""Restricted isometry constant :math:`\delta_K` of the dictionary.

    The smallest :math:`\delta` with
    :math:`(1 - \delta)\|z\|^2 \le \|z D\|^2 \le (1 + \delta)\|z\|^2` for every K-sparse z,
    i.e. the largest deviation from 1 of an eigenvalue of a K x K Gram submatrix
    :math:`D_S D_S^\top`.

    Parameters
    ----------
    D : array_like of shape (N, M), unit-norm rows.
    K : int
        The order, with 1 <= K <= N.
    method : {"exact", "sampled"}
        ``exact`` visits all C(N, K) supports (refused above ``max_subsets``).
        ``sampled`` visits ``n_subsets`` uniformly random supports and returns an honest
        **lower bound** on delta_K (never an estimate of it): the true constant can only
        be larger. Certificates need ``exact``.
    n_subsets : int
        Supports drawn by ``sampled``.
    seed : int or numpy.random.Generator
        Used by ``sampled`` only.

    References
    ----------
    .. [1] Candes & Tao (2005), "Decoding by linear programming", IEEE Trans. Inf. Theory 51(12).
    .. [2] Candes (2008), "The restricted isometry property and its implications for
       compressed sensing", C. R. Acad. Sci. Paris I 346.

    Examples
    --------
    >>> rip_constant(np.eye(4), 2)
    0.0
    """
    D = check_dictionary(D)
    N = D.shape[0]
    K = check_k(K, N)
    check_choice(method, "method", ("exact", "sampled"))
    n_subsets = check_int(n_subsets, "n_subsets", minimum=1)
    gram = D @ D.T
    if method == "exact":
        work = math.comb(N, K)
        if work > max_subsets:
            raise ValueError(
                f"exact RIP constant of order K={K} with N={N} visits C(N, K)={work:.3g} "
                f"supports, over max_subsets={max_subsets}. Use method='sampled' for a lower "
                "bound, lower K, or raise max_subsets."
            )
        chunks = _subset_chunks(N, K)
    else:
        n_subsets = check_int(n_subsets, "n_subsets", minimum=1)
        rng = as_generator(seed)
        # Sorted like the exact enumeration, so a sampled support yields the very same
        # Gram submatrix (and eigenvalues, bit for bit) as in the exact run.
        subsets = np.sort(np.argsort(rng.random((n_subsets, N)), axis=1)[:, :K], axis=1)
        chunks = (subsets[i : i + _SUBSET_CHUNK] for i in range(0, n_subsets, _SUBSET_CHUNK))
    delta = 0.0
    for subsets in chunks:
        sub_gram = gram[subsets[:, :, None], subsets[:, None, :]]  # (C, K, K)
        eigenvalues = np.linalg.eigvalsh(sub_gram)
        delta = max(delta, float(np.max(eigenvalues[:, -1] - 1.0)), float(np.max(1.0 - eigenvalues[:, 0])))
    return delta


def coherence_recovery_sparsity(D) -> float:
    r"""The coherence threshold :math:`(1 + 1/\mu) / 2`: every K-sparse code with K below it
    is the unique sparsest representation and is recovered by basis pursuit and OMP.

    References
    ----------
    .. [1] Donoho & Elad (2003), PNAS 100(5); Tropp (2004), "Greed is good", IEEE Trans.
       Inf. Theory 50(10), Theorem A.
    """
    mu = mutual_coherence(D)
    return math.inf if mu == 0 else 0.5 * (1.0 + 1.0 / mu)
