"""gaptheory: verify the amortisation gap of sparse autoencoders.

Exact solvers, symbolic bounds and honest experiments around O'Neill, Gumran & Klindt,
"Compute Optimal Inference and Provable Amortisation Gap in Sparse Autoencoders"
(arXiv 2411.13117). Shapes follow ``../shared/NOTATION.md``: ``D (N, M)`` with
unit-norm rows, ``Z (B, N)``, ``X = Z @ D (B, M)``.
"""

__version__ = "0.1.0"
