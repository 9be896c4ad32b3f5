r"""Interpretability of latents without an LLM judge: top contexts, token detection, statistics.

For a trained encoder's codes on real activations (one row per token, :mod:`gaptheory.activations`;
the comparison of encoders on them is the ``activations`` task kind, :mod:`gaptheory.experiments.real`).
A latent fires on a token when its code exceeds :data:`gaptheory.metrics.ACTIVE_THRESHOLD`, the
threshold of the L0 and dead-latent counts reported beside these scores:

- :func:`top_contexts` lists each latent's top-activating tokens with their surrounding text.
- :func:`detection_scores` measures how well a latent's firing **predicts, on held-out text,
  the tokens most associated with it on training text**: on the training split the latent's
  associated token set :math:`S_i` is chosen from training data alone; on the held-out split
  the prediction "latent *i* fires" is scored against the target "the token is in
  :math:`S_i`" with precision, recall and F1. A shuffled-codes baseline gives the chance
  level. This is an automatic, judge-free analogue of the detection scores of autointerp
  (Bills et al. 2023; Paulo et al. 2024).
- :func:`compare_scores` compares two methods' per-latent scores with a two-sided
  Mann-Whitney U test and its effect size, Cliff's delta (equal to the rank-biserial
  correlation), and :func:`holm` adjusts a family of p-values.
- :func:`select_closest_l0` picks, among a method's sparsity settings, the one whose
  validation L0 is closest to a common target (a sparsity-matched comparison).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.stats

from ._validation import as_generator, check_array, check_int
from .metrics import ACTIVE_THRESHOLD

#: A token type is a candidate for a latent's associated set only if it occurs at least this
#: often in the training split: rarer types give precision estimates of 0 or 1 from noise.
MIN_TOKEN_COUNT = 3

#: Largest associated token set per latent; "the tokens most associated" stays a short list.
MAX_ASSOCIATED_TOKENS = 10

#: Latents firing on fewer training tokens than this are not scored (dead or too rare to
#: choose an associated set); they are counted in ``DetectionScores.n_unscored``.
MIN_TRAIN_FIRES = 5

#: Latents scored per block, bounding the dense (token types x latents) count matrix.
_LATENT_BLOCK = 512


@dataclass(frozen=True)
class DetectionScores:
    """Per-latent detection scores on held-out tokens (only latents with enough training fires)."""

    latents: np.ndarray      # (L,) indices of the scored latents
    precision: np.ndarray    # (L,) P(token in S_i | latent fires), held-out
    recall: np.ndarray       # (L,) P(latent fires | token in S_i), held-out
    f1: np.ndarray           # (L,) harmonic mean of the two
    associated: list         # L lists of token ids, S_i chosen on training tokens
    n_latents: int           # N, all latents of the encoder
    n_unscored: int          # latents with fewer than MIN_TRAIN_FIRES training fires

    def summary(self) -> dict:
        """Medians and means of the scores, and the counts."""
        out = {"n_scored": int(self.latents.size), "n_unscored": self.n_unscored, "n_latents": self.n_latents}
        for name in ("precision", "recall", "f1"):
            values = getattr(self, name)
            out[f"median_{name}"] = float(np.median(values)) if values.size else float("nan")
            out[f"mean_{name}"] = float(np.mean(values)) if values.size else float("nan")
        return out


def _one_hot(index: np.ndarray, n_types: int) -> scipy.sparse.csr_matrix:
    rows = np.arange(index.size)
    return scipy.sparse.csr_matrix((np.ones(index.size, dtype=np.float32), (rows, index)),
                                   shape=(index.size, n_types))


def detection_scores(train_codes, train_token_ids, test_codes, test_token_ids, *,
                     max_associated: int = MAX_ASSOCIATED_TOKENS, min_token_count: int = MIN_TOKEN_COUNT,
                     min_train_fires: int = MIN_TRAIN_FIRES) -> DetectionScores:
    r"""Score each latent by how well its firing predicts its training-associated tokens on held-out text.

    On the training split, with :math:`f_{ti} = [z_{ti} > \tau]` and token types :math:`w`
    occurring :math:`n_w \ge` ``min_token_count`` times, types are ranked by
    :math:`P(f_i \mid w) = \sum_{t: w_t = w} f_{ti} / n_w` and :math:`S_i` is the prefix of at
    most ``max_associated`` types maximising the training F1

    .. math:: F_1(S) = \frac{2\,|\{t: f_{ti}, w_t \in S\}|}{|\{t: f_{ti}\}| + |\{t: w_t \in S\}|}.

    On the held-out split the same counts give precision :math:`P(w_t \in S_i \mid f_{ti})`,
    recall :math:`P(f_{ti} \mid w_t \in S_i)` and F1 (0 where undefined).

    Parameters
    ----------
    train_codes : array_like of shape (B, N)
        Codes of the training tokens.
    train_token_ids : array_like of shape (B,)
    test_codes : array_like of shape (B', N)
        Codes of the held-out tokens (other documents).
    test_token_ids : array_like of shape (B',)
    max_associated, min_token_count, min_train_fires : int
        See the module constants.

    Returns
    -------
    DetectionScores

    Examples
    --------
    >>> ids = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2] * 2)
    >>> Z = np.stack([(ids == 1).astype(float), np.ones(ids.size)], axis=1)  # latent 0 detects token 1
    >>> s = detection_scores(Z, ids, Z, ids, min_token_count=1, min_train_fires=1)
    >>> s.associated[0], float(s.f1[0]), float(s.precision[1])
    ([1], 1.0, 1.0)
    """
    train_codes = check_array(train_codes, "train_codes")
    test_codes = check_array(test_codes, "test_codes")
    train_ids = np.asarray(train_token_ids, dtype=np.int64).ravel()
    test_ids = np.asarray(test_token_ids, dtype=np.int64).ravel()
    if train_ids.size != train_codes.shape[0] or test_ids.size != test_codes.shape[0]:
        raise ValueError(f"token ids must have one entry per code row; got {train_ids.size} ids for "
                         f"train_codes{train_codes.shape} and {test_ids.size} for test_codes{test_codes.shape}.")
    if train_codes.shape[1] != test_codes.shape[1]:
        raise ValueError(f"train_codes{train_codes.shape} and test_codes{test_codes.shape} must have the "
                         "same N; encode both splits with the same encoder.")
    check_int(max_associated, "max_associated", minimum=1)
    check_int(min_token_count, "min_token_count", minimum=1)
    check_int(min_train_fires, "min_train_fires", minimum=1)

    N = train_codes.shape[1]
    types, train_index = np.unique(train_ids, return_inverse=True)
    type_counts = np.bincount(train_index, minlength=types.size).astype(np.float64)  # n_w
    lookup = {int(t): i for i, t in enumerate(types)}
    test_index = np.array([lookup.get(int(t), -1) for t in test_ids])
    known = test_index >= 0
    candidates = type_counts >= min_token_count
    train_hot, test_hot = _one_hot(train_index, types.size), _one_hot(test_index[known], types.size)

    scored, precision, recall, f1, associated = [], [], [], [], []
    for start in range(0, N, _LATENT_BLOCK):
        block = slice(start, min(start + _LATENT_BLOCK, N))
        fires = (train_codes[:, block] > ACTIVE_THRESHOLD).astype(np.float32)
        n_fires = fires.sum(axis=0)
        fires_per_type = np.asarray(train_hot.T @ fires, dtype=np.float64)  # (V, n_block)
        test_fires = test_codes[:, block] > ACTIVE_THRESHOLD
        test_fires_per_type = np.asarray(test_hot.T @ test_fires[known].astype(np.float32), dtype=np.float64)
        test_type_counts = np.bincount(test_index[known], minlength=types.size).astype(np.float64)
        for j in np.flatnonzero(n_fires >= min_train_fires):
            chosen = _associated_set(fires_per_type[:, j], type_counts, candidates, n_fires[j], max_associated)
            tp = test_fires_per_type[chosen, j].sum()
            n_pred, n_true = test_fires[:, j].sum(), test_type_counts[chosen].sum()
            p = tp / n_pred if n_pred else 0.0
            r = tp / n_true if n_true else 0.0
            scored.append(start + j)
            precision.append(p)
            recall.append(r)
            f1.append(2 * p * r / (p + r) if p + r else 0.0)
            associated.append(types[chosen].tolist())
    as_array = lambda values, dtype=np.float64: np.asarray(values, dtype=dtype)  # noqa: E731
    return DetectionScores(as_array(scored, np.int64), as_array(precision), as_array(recall), as_array(f1),
                           associated, N, N - len(scored))


def _associated_set(fires_per_type, type_counts, candidates, n_fires, max_associated) -> np.ndarray:
    """Type indices of S_i: the prefix by P(fire | type) that maximises training F1."""
    rate = np.where(candidates, fires_per_type / np.maximum(type_counts, 1), -1.0)
    order = np.lexsort((-type_counts, -rate))[:max_associated]  # by rate, ties by frequency
    order = order[rate[order] > 0]
    if order.size == 0:
        return order
    tp, predicted = np.cumsum(fires_per_type[order]), np.cumsum(type_counts[order])
    best = int(np.argmax(2 * tp / (predicted + n_fires)))
    return order[: best + 1]


def shuffled_baseline(train_codes, train_token_ids, test_codes, test_token_ids, *, seed, **kwargs) -> DetectionScores:
    """Detection scores after permuting the held-out codes across tokens: the chance level.

    The associated sets come from the real training codes; only the pairing of held-out codes
    and tokens is destroyed, so any F1 left is what token frequency alone explains.
    """
    test_codes = check_array(test_codes, "test_codes")
    order = as_generator(seed).permutation(test_codes.shape[0])
    return detection_scores(train_codes, train_token_ids, test_codes[order], test_token_ids, **kwargs)


@dataclass(frozen=True)
class Context:
    """One top-activating token of a latent with its surrounding text."""

    activation: float
    token: str
    text: str  # the window around the token, the token itself in [[double brackets]]


def top_contexts(codes, latent: int, token_ids, window_ids, vocab, *, k: int = 5, width: int = 8) -> list[Context]:
    """The ``k`` tokens on which ``latent`` is largest, each with ``width`` tokens either side.

    Context never crosses a model window (``window_ids``); WordPiece continuations (``##``) are
    joined to the previous piece.

    Examples
    --------
    >>> vocab = ["the", "big", "fire", "##s", "burn"]
    >>> ids = np.array([0, 1, 2, 3, 4]); windows = np.zeros(5, dtype=int)
    >>> codes = np.array([[0.0], [0.1], [2.0], [0.5], [0.0]])
    >>> [c.text for c in top_contexts(codes, 0, ids, windows, vocab, k=2, width=2)]
    ['the big [[fire]]s burn', 'big fire[[s]] burn']
    """
    codes = np.asarray(codes)
    check_int(latent, "latent", minimum=0, maximum=codes.shape[1] - 1)
    check_int(k, "k", minimum=1)
    check_int(width, "width", minimum=0)
    column = codes[:, latent]
    top = np.argsort(-column, kind="stable")[:k]
    contexts = []
    for t in top:
        if column[t] <= ACTIVE_THRESHOLD:
            break
        lo, hi = max(0, t - width), min(column.size, t + width + 1)
        same = np.flatnonzero(window_ids[lo:hi] == window_ids[t]) + lo
        text = ""
        for s in same:
            piece = vocab[int(token_ids[s])]
            continuation = piece.startswith("##")
            body = piece[2:] if continuation else piece
            text += ("" if continuation or not text else " ") + (f"[[{body}]]" if s == t else body)
        contexts.append(Context(float(column[t]), vocab[int(token_ids[t])], text))
    return contexts


@dataclass(frozen=True)
class Comparison:
    """Two methods' per-latent scores compared with a Mann-Whitney U test."""

    name_a: str
    name_b: str
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    u_statistic: float   # U of sample a
    p_value: float       # two-sided, unadjusted
    cliffs_delta: float  # P(a > b) - P(a < b), in [-1, 1]; equals the rank-biserial correlation

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def compare_scores(a, b, *, name_a: str = "a", name_b: str = "b") -> Comparison:
    r"""Two-sided Mann-Whitney U test of two score samples and Cliff's delta.

    .. math:: \delta = \frac{\#\{(i, j): a_i > b_j\} - \#\{(i, j): a_i < b_j\}}{n_a n_b}
              = \frac{2 U_a}{n_a n_b} - 1

    Latents of one encoder are treated as exchangeable samples (they share a training run, so
    the p-value is a descriptive guide; the effect size is the quantity to read).

    References
    ----------
    .. [1] Mann & Whitney (1947), Ann. Math. Stat. 18(1); Cliff (1993), Psychol. Bull. 114(3);
       Kerby (2014), "The simple difference formula", Compr. Psychol. 3 (rank-biserial = delta).

    Examples
    --------
    >>> c = compare_scores([0.5, 0.6, 0.7], [0.1, 0.2, 0.55])
    >>> round(c.cliffs_delta, 4)
    0.7778
    """
    a = check_array(a, "a", ndim=1)
    b = check_array(b, "b", ndim=1)
    test = scipy.stats.mannwhitneyu(a, b, alternative="two-sided")
    delta = 2.0 * float(test.statistic) / (a.size * b.size) - 1.0
    return Comparison(name_a, name_b, a.size, b.size, float(np.median(a)), float(np.median(b)),
                      float(test.statistic), float(test.pvalue), delta)


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control, any dependence).

    References
    ----------
    .. [1] Holm (1979), "A simple sequentially rejective multiple test procedure", Scand. J. Stat. 6(2).

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = check_array(p_values, "p_values", ndim=1)
    order = np.argsort(p)
    adjusted = np.maximum.accumulate((p.size - np.arange(p.size)) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def select_closest_l0(val_l0, target_l0: float) -> int:
    r"""Index of the grid point whose validation L0 is closest to ``target_l0``.

    .. math:: \hat j = \arg\min_j |L_0^{val}(j) - L_0^{target}|

    ties go to the first point in grid order. Only validation numbers enter, so the held-out
    split stays untouched until the chosen models are scored (Gao et al. 2024 compare methods
    at matched L0 in the same way).

    Parameters
    ----------
    val_l0 : array_like of shape (G,)
        Validation L0 of each of a method's G grid points.
    target_l0 : float
        The common L0 target, > 0.

    References
    ----------
    .. [1] Gao et al. (2024), "Scaling and evaluating sparse autoencoders", arXiv 2406.04093, Sec. 2.

    Examples
    --------
    >>> select_closest_l0([80.0, 41.0, 20.0], 32)
    1
    """
    val_l0 = check_array(val_l0, "val_l0", ndim=1)
    if val_l0.size == 0 or not np.isfinite(val_l0).all():
        raise ValueError(f"val_l0={val_l0.tolist()} must be a non-empty list of finite L0 values, one per grid point.")
    if not (isinstance(target_l0, (int, float)) and np.isfinite(target_l0) and target_l0 > 0):
        raise ValueError(f"target_l0={target_l0!r} must be a finite number > 0.")
    return int(np.argmin(np.abs(val_l0 - target_l0)))


def token_strings(metadata: dict) -> dict:
    """Token id -> string, from the ``token_strings`` an activations file records in its metadata."""
    import json

    return {int(k): v for k, v in json.loads(metadata.get("token_strings", "{}")).items()}


def example_latents(scores: DetectionScores, Z, token_ids, window_ids, vocab, n_examples: int) -> list[dict]:
    """The ``n_examples`` latents of highest held-out F1, each with its scores, associated tokens
    and top contexts (:func:`top_contexts`); ``vocab`` maps token ids to strings."""
    order = np.argsort(-scores.f1, kind="stable")[:n_examples]
    examples = []
    for j in order:
        latent = int(scores.latents[j])
        contexts = top_contexts(Z, latent, token_ids, window_ids, vocab, k=3, width=6)
        examples.append({"latent": latent, "f1": float(scores.f1[j]), "precision": float(scores.precision[j]),
                         "recall": float(scores.recall[j]),
                         "associated": [vocab[int(t)] for t in scores.associated[j]],
                         "contexts": [c.text for c in contexts]})
    return examples
