r"""Exact integer matrices as int64 limbs, multiplied exactly by float64 BLAS.

An integer matrix :math:`A` is held as limbs :math:`A = \sum_{t=0}^{T-1} A_t\, 2^{b t}` with
:math:`b` = :data:`LIMB_BITS`, the limbs :math:`A_t` int64 arrays: :math:`0 \le A_t < 2^b` for
:math:`t < T - 1` and :math:`|A_{T-1}| < 2^b` (the top limb carries the sign). Then

.. math:: A B = \sum_{s, t} (A_s B_t)\, 2^{b (s + t)},

and each :math:`A_s B_t` over an inner dimension of at most :data:`CHUNK` is an ordinary float64
GEMM that is *exact*: every product of two limbs is an integer below :math:`2^{2b}` and every
partial sum, in whatever order the BLAS adds, an integer of magnitude at most
:math:`\mathrm{CHUNK}\,(2^b - 1)^2 < 2^{53}`, so no operation rounds. This assumes a BLAS that
computes in IEEE float64 with the classical algorithm (OpenBLAS, MKL, BLIS and Accelerate do), not
a Strassen-like or reduced-precision one; ``tests/test_integer_matrix.py`` checks the largest such
GEMM against python-flint. The limb products are summed in int64 and the carries propagated once
per product, so big-integer arithmetic is only ever done on vectors. This is the splitting idea
of Ozaki, Ogita, Oishi and Rump, "Error-free transformations of matrix multiplication by using
fast routines of matrix multiplication" (Numer. Algorithms 59, 2012), on integers instead of
floats.

It serves the exact certificate checks (``certificates``), where the products of (M + 2)-square
integer matrices with 40-90 bit entries dominated the cost when done entry by entry.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

#: Bits per limb.
LIMB_BITS = 20
_MASK = (1 << LIMB_BITS) - 1
#: Largest inner dimension of one exact float64 GEMM of limbs: CHUNK (2^b - 1)^2 < 2^53.
CHUNK = 1 << (53 - 2 * LIMB_BITS)
#: Limb products summed in int64 before the carries are propagated (each below 2^53: no overflow).
_SUMS_BEFORE_CARRY = 512


def _carried(parts: list[np.ndarray], trim: bool = True) -> np.ndarray:
    """Canonical limbs (T, ...) of :math:`\\sum_t \\mathrm{parts}_t 2^{bt}` (int64 parts, each below 2^62);
    with ``trim``, as few limbs as the entries need."""
    limbs, carry = [], np.zeros_like(parts[0])
    for part in parts:
        total = part + carry
        limbs.append(total & _MASK)
        carry = total >> LIMB_BITS  # floor division: the digit above is nonnegative
    while np.any(np.abs(carry) > _MASK):
        limbs.append(carry & _MASK)
        carry = carry >> LIMB_BITS
    limbs.append(carry)
    while trim and len(limbs) > 1:
        top, below = limbs[-1], limbs[-2]
        # A top limb of 0, or of -1 over a digit d >= 1, folds into a top of d or d - 2^b.
        if not np.all((top == 0) | ((top == -1) & (below > 0))):
            break
        limbs[-2] = below + (top << LIMB_BITS)
        limbs.pop()
    return np.stack(limbs)


class IntegerMatrix:
    r"""An exact integer matrix (p, n) in canonical int64 limbs (see the module docstring).

    Build one with :meth:`from_floats` (a float array as integers times one power of two),
    :meth:`from_integers` (Python or NumPy integers of any size); multiply with ``@``; read it
    back with :meth:`to_objects` (Python ints).
    """

    __slots__ = ("limbs",)

    def __init__(self, limbs: np.ndarray):
        self.limbs = limbs

    @property
    def shape(self) -> tuple[int, ...]:
        return self.limbs.shape[1:]

    @classmethod
    def from_floats(cls, A) -> tuple["IntegerMatrix", int]:
        r"""A finite float64 array as ``(A_int, e)`` with ``A == A_int 2^e`` exactly.

        Each entry is written :math:`m\,2^f` with :math:`m` odd (:math:`|m| < 2^{53}`) and placed
        at bit :math:`f - e` of its integer, :math:`e` the smallest such :math:`f` (0 when every
        entry is zero): the largest :math:`e` for which ``A_int`` is an integer matrix, so that
        ``A_int`` has as few limbs as the entries allow (a matrix of ones is the integer 1, not
        :math:`2^{52}`).
        """
        A = np.asarray(A, dtype=np.float64)
        if not np.isfinite(A).all():
            raise ValueError("IntegerMatrix.from_floats needs finite entries; got NaN or inf.")
        mantissa, exponents = np.frexp(A)
        ints = np.ldexp(mantissa, 53).astype(np.int64)
        nonzero = ints != 0
        if not nonzero.any():
            return cls(np.zeros((1, *A.shape), dtype=np.int64)), 0
        magnitude = np.abs(ints)
        lowest = np.log2(np.where(nonzero, magnitude & -magnitude, 1)).astype(np.int64)  # exact: powers of two
        magnitude = (magnitude >> lowest).astype(np.uint64)  # odd
        shifts = exponents.astype(np.int64) - 53 + lowest
        base = int(shifts[nonzero].min())
        shifts = np.where(nonzero, shifts - base, 0)
        sign = np.sign(ints)
        parts = []
        for t in range(-(-(53 + int(shifts.max())) // LIMB_BITS)):
            low = LIMB_BITS * t - shifts  # bit of |m| at the bottom of limb t
            down = magnitude >> np.clip(low, 0, 63).astype(np.uint64)
            up = magnitude << np.clip(-low, 0, 63).astype(np.uint64)  # unsigned: wraps, low bits kept
            digit = np.where(low >= 0, np.where(low < 64, down, 0), np.where(-low < LIMB_BITS, up, 0))
            parts.append(sign * (digit & np.uint64(_MASK)).astype(np.int64))
        return cls(_carried(parts)), base

    @classmethod
    def from_integers(cls, values) -> "IntegerMatrix":
        """Integers of any size (a nested sequence or an int64 or object array) as limbs."""
        if isinstance(values, np.ndarray) and (values.dtype.kind == "i" or (values.dtype.kind == "u" and values.dtype.itemsize < 8)):
            return cls(_carried([values.astype(np.int64)]))  # fits int64
        values = np.asarray(values, dtype=object)
        if values.dtype == object and values.size:
            if not all(isinstance(v, (int, np.integer)) for v in values.flat):
                raise TypeError("IntegerMatrix.from_integers needs integers.")
        magnitude = np.abs(values)
        bits = max((int(v).bit_length() for v in magnitude.flat), default=0)
        sign = np.sign(values).astype(np.int64)
        parts = [sign * ((magnitude >> (LIMB_BITS * t)) & _MASK).astype(np.int64)
                 for t in range(max(1, -(-bits // LIMB_BITS)))]
        return cls(_carried(parts))

    def to_objects(self) -> np.ndarray:
        """The entries as an object array of Python ints."""
        total = np.zeros(self.shape, dtype=object)
        for t in range(len(self.limbs) - 1, -1, -1):
            total = (total << LIMB_BITS) + self.limbs[t].astype(object)
        return total

    @property
    def T(self) -> "IntegerMatrix":
        return IntegerMatrix(self.limbs.swapaxes(1, 2))

    def diagonal(self) -> np.ndarray:
        """The diagonal as Python ints."""
        return IntegerMatrix(np.diagonal(self.limbs, axis1=1, axis2=2)).to_objects()

    def abs(self) -> "IntegerMatrix":
        """Entrywise absolute value (the sign of an entry is that of its top limb)."""
        sign = np.where(self.limbs[-1] < 0, -1, 1)
        return IntegerMatrix(_carried(list(self.limbs * sign)))

    def row_sums(self) -> list[int]:
        """Exact sums of each row (p,) as Python ints (limbwise int64 sums, n < 2^43)."""
        sums = self.limbs.sum(axis=2)  # (T, p)
        return [sum(int(sums[t, k]) << (LIMB_BITS * t) for t in range(len(sums))) for k in range(sums.shape[1])]

    def __matmul__(self, other: "IntegerMatrix") -> "IntegerMatrix":
        left, right = self.limbs, other.limbs
        p, n = left.shape[1:]
        if right.shape[1] != n:
            raise ValueError(f"IntegerMatrix product of shapes {self.shape} and {other.shape}")
        q = right.shape[2]
        left_floats = left.astype(np.float64)
        right_floats = right.astype(np.float64)
        parts = [np.zeros((p, q), dtype=np.int64) for _ in range(len(left) + len(right) - 1)]
        added = 0
        for start in range(0, max(n, 1), CHUNK):
            inner = slice(start, start + CHUNK)
            for s in range(len(left)):
                for t in range(len(right)):
                    parts[s + t] += (left_floats[s][:, inner] @ right_floats[t][inner]).astype(np.int64)
                added += 1
                if added == _SUMS_BEFORE_CARRY:
                    parts, added = list(_carried(parts, trim=False)), 0
        return IntegerMatrix(_carried(parts))

    def shifted(self, bits: int) -> "IntegerMatrix":
        """The matrix times :math:`2^{bits}` (``bits >= 0``)."""
        whole, rest = divmod(int(bits), LIMB_BITS)
        limbs = self.limbs << rest  # each below 2^(2b): no overflow
        zeros = np.zeros((whole, *self.shape), dtype=np.int64)
        return IntegerMatrix(_carried(list(np.concatenate([zeros, limbs]))))


def hstack(blocks: list[IntegerMatrix]) -> IntegerMatrix:
    """Integer matrices side by side (p, n_1 + n_2 + ...)."""
    depth = max(len(block.limbs) for block in blocks)
    padded = [np.concatenate([block.limbs, np.zeros((depth - len(block.limbs), *block.shape), dtype=np.int64)])
              for block in blocks]
    return IntegerMatrix(_carried(list(np.concatenate(padded, axis=2))))


def sparse_product(Z, B: IntegerMatrix) -> tuple[IntegerMatrix, int]:
    r"""Exactly :math:`Z B` for a float CSR matrix ``Z`` (p, n), read as the dyadic rationals its
    entries are, and an integer matrix ``B`` (n, q): ``(P, e)`` with :math:`Z B = P\,2^e`.

    One sparse-times-dense product per pair of limbs; exact while a row of ``Z`` has at most
    :data:`CHUNK` nonzeros (beyond that, the dense chunked product).
    """
    Z = scipy.sparse.csr_array(Z)
    if not np.isfinite(Z.data).all():
        raise ValueError("sparse_product needs finite entries; got NaN or inf.")
    data, exponent = IntegerMatrix.from_floats(Z.data)
    if Z.nnz and np.diff(Z.indptr).max() > CHUNK:
        dense, exponent = IntegerMatrix.from_floats(Z.toarray())
        return dense @ B, exponent
    p, q = Z.shape[0], B.shape[1]
    right_floats = B.limbs.astype(np.float64)
    parts = [np.zeros((p, q), dtype=np.int64) for _ in range(len(data.limbs) + len(B.limbs) - 1)]
    for s, limb in enumerate(data.limbs):
        left = scipy.sparse.csr_array((limb.astype(np.float64), Z.indices, Z.indptr), shape=Z.shape)
        for t, right in enumerate(right_floats):
            parts[s + t] += np.asarray(left @ right).astype(np.int64)
    return IntegerMatrix(_carried(parts)), exponent
