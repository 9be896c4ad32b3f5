r"""The amortisation gap, computed exactly: the best ReLU encoder for a code set, and a lower bound.

For a dictionary ``D`` (N, M) and a set ``S`` of nonnegative codes, the best encoder
:math:`f(x) = \mathrm{relu}(x W_{enc} + b_{enc})` in the worst case over ``S`` is

.. math:: \varepsilon^*_i = \min_{w \in \mathbb{R}^M,\, b \in \mathbb{R}}\ \max_{z \in S}
          \big|\mathrm{relu}(w \cdot (z D) + b) - z_i\big|, \qquad i = 1, \dots, N,

one problem per latent (column ``i`` of ``W_enc`` and entry ``i`` of ``b_enc``). For
codes with at most ``K`` nonzeros, each in ``{0} U [lo, hi]`` (``lo = hi = 1``: binary
codes), :func:`relu_minimax_gap` solves it as ONE linear program of size O(N + M) per
latent, without enumerating supports (theorem T3, ``proofs/T3_exact_lp.md``): with
:math:`u = D w`, the worst support is the K largest :math:`u_j`, and the sum of the K
largest entries is an LP (:math:`S_K(v) = \min_{s \ge 0} K s + \sum_j (v_j - s)_+`).
:func:`relu_minimax_gap_codes` solves the same problem for an explicit finite code set,
one constraint per code (the enumeration LP). :func:`gap_lower_bound` is theorem T2,
:math:`\varepsilon^*_i \ge 1 / (2 (1 + \beta_i))`.

Every solve returns a :class:`GapCertificate` per latent: binding codes with
nonnegative weights, read off the LP duals. :func:`verify_certificate` re-derives from
them, by weak duality and without the solver, a lower bound on :math:`\varepsilon^*_i`;
:func:`worst_case_error` evaluates the returned encoder exactly on the whole code set
(closed form, no enumeration; a JumpReLU encoder too, :class:`JumpReLUEncoder`), and
:func:`worst_case_codes` names the codes where a ReLU encoder errs most. Together they bracket the optimum independently.

The package, one module per idea: :mod:`~gaptheory.gap.results` (the encoder and
:class:`GapResult`), :mod:`~gaptheory.gap.lp` (the T3 and enumeration LPs),
:mod:`~gaptheory.gap.errors` (exact evaluation of an encoder), :mod:`~gaptheory.gap.verification`
(certificates and their exact check), :mod:`~gaptheory.gap.lower_bound` (T2),
:mod:`~gaptheory.gap.report` (:func:`certify_gap`) and :mod:`~gaptheory.gap.parallel` (blocks of
latents over processes or an executor).
"""

from .errors import code_set_error, worst_case_codes, worst_case_error
from .lower_bound import atom_l1_cost, gap_lower_bound
from .lp import (
    DUAL_ZERO,
    GAP_METHODS,
    HIGHS_OPTIONS,
    MAX_ENUMERATED_CODES,
    WORKING_SET_MIN_RATIO,
    WORKING_SET_START,
    _support_decomposition,
    enumerate_codes,
    relu_minimax_gap,
    relu_minimax_gap_codes,
)
from .parallel import EXECUTOR_TASKS
from .report import GapProblemSize, GapReport, certify_gap
from .results import ENCODER_ATOL, GapResult, JumpReLUEncoder, MinimaxEncoder
from .verification import KIND_LOWER, KIND_UPPER, KIND_ZERO, CertificateCheck, GapCertificate, verify_certificate

__all__ = [
    "CertificateCheck",
    "DUAL_ZERO",
    "ENCODER_ATOL",
    "EXECUTOR_TASKS",
    "GAP_METHODS",
    "GapCertificate",
    "GapProblemSize",
    "GapReport",
    "GapResult",
    "HIGHS_OPTIONS",
    "KIND_LOWER",
    "KIND_UPPER",
    "KIND_ZERO",
    "MAX_ENUMERATED_CODES",
    "JumpReLUEncoder",
    "MinimaxEncoder",
    "WORKING_SET_MIN_RATIO",
    "WORKING_SET_START",
    "atom_l1_cost",
    "certify_gap",
    "code_set_error",
    "enumerate_codes",
    "gap_lower_bound",
    "relu_minimax_gap",
    "relu_minimax_gap_codes",
    "verify_certificate",
    "worst_case_codes",
    "worst_case_error",
]
