r"""Interpretability of latents without an LLM judge: top contexts, token detection, statistics.

For a trained encoder's codes on real activations (one row per token, :mod:`gaptheory.activations`):

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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
import scipy.stats

from ._validation import as_generator, check_array, check_int, check_k

#: A latent "fires" on a token when its code exceeds this. ReLU/TopK/soft-thresholded codes
#: are exactly 0 when off; a tiny positive floor keeps float round-off (~1e-7 in float32
#: matmuls) from counting as firing for dense encoders.
FIRE_THRESHOLD = 1e-6

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
        fires = (train_codes[:, block] > FIRE_THRESHOLD).astype(np.float32)
        n_fires = fires.sum(axis=0)
        fires_per_type = np.asarray(train_hot.T @ fires, dtype=np.float64)  # (V, n_block)
        test_fires = test_codes[:, block] > FIRE_THRESHOLD
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
        if column[t] <= FIRE_THRESHOLD:
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


# ----- the real-activations comparison (issue 7) -----------------------------------------

#: Methods compared on real activations (names of :data:`gaptheory.experiments.methods.METHODS`).
COMPARISON_METHODS = ("sae", "sae_topk", "mlp", "sae_ito", "sparse_coding")

#: The sparsity knob each method's sweep varies (``ComparisonConfig.grid``); SAE + ITO reuses the
#: ReLU SAE trained at each l1 and refines its codes with alpha = l1 / 2.
SPARSITY_KNOBS = {"sae": "l1_coefficient", "sae_topk": "k", "mlp": "l1_coefficient", "sae_ito": "l1_coefficient",
                  "sparse_coding": "alpha"}

#: Steps of the throwaway pilot run that measures a sparse-coding step's FLOPs (its inner
#: FISTA cost depends on the data, so the budget cannot be matched analytically).
_PILOT_STEPS = 2


@dataclass(frozen=True)
class ComparisonConfig:
    """Options of :func:`compare_encoders_on_activations` (one set for every method).

    Without grids every method trains once at ``l1_coefficient`` / ``k`` (alpha = l1 / 2). Any
    non-empty grid turns the sparsity sweep on (:attr:`sweep`): each method then trains at every
    value of :meth:`grid` and keeps the one whose validation L0 is closest to ``target_l0``.
    """

    expansion: int = 2             # N / M
    k: int = 32                    # active latents of the TopK SAE
    l1_coefficient: float = 0.1    # ReLU SAE and MLP: weight of mean ||z||_1 (data scaled to E||x||^2 = 1)
    mlp_hidden: int = 1024         # hidden width of the MLP encoder (the paper's largest)
    mlp_fit_output: bool = False   # MLP: start the output layer at the SAE's start (MLPEncoderConfig.fit_output_to_decoder)
    mlp_init_rows: int | None = None  # MLP: training rows its data initialisation uses (None: all; it is paid from the budget)
    steps: int = 400               # ReLU SAE steps; their FLOPs are every method's training budget
    batch_size: int = 256          # rows per training step, every method
    lr: float = 1e-3               # Adam learning rate, every method
    fista_max_iter: int = 100      # FISTA cap per row at inference (ITO and sparse coding)
    fista_tol: float = 1e-3        # FISTA relative duality-gap tolerance at inference
    fit_max_iter: int = 30         # sparse coding: FISTA cap of the inner solves during training
    n_val: int = 1000              # last rows of the training file held out for model selection
    n_score_train: int = 6000      # training tokens encoded to choose each latent's associated tokens
    n_score_test: int = 3000       # held-out tokens encoded for every reported metric
    n_examples: int = 3            # example latents per method in the report
    methods: tuple = COMPARISON_METHODS
    l1_grid: tuple = ()            # sweep: l1 values of the ReLU SAE, MLP and SAE + ITO (empty: l1_coefficient)
    k_grid: tuple = ()             # sweep: k values of the TopK SAE (empty: k)
    alpha_grid: tuple = ()         # sweep: alpha values of sparse coding (empty: l1_coefficient / 2)
    target_l0: float = 32.0        # sweep: each method keeps the grid point whose validation L0 is closest

    def __post_init__(self):
        for name in ("expansion", "k", "mlp_hidden", "steps", "batch_size", "fista_max_iter", "fit_max_iter",
                     "n_val", "n_score_train", "n_score_test"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.n_examples, "n_examples", minimum=0)
        if self.mlp_init_rows is not None:
            check_int(self.mlp_init_rows, "mlp_init_rows", minimum=1)
        for name in ("l1_coefficient", "lr", "fista_tol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} must be a finite number > 0.")
        object.__setattr__(self, "methods", tuple(self.methods))
        unknown = sorted(set(self.methods) - set(COMPARISON_METHODS))
        if unknown or not self.methods:
            raise ValueError(f"methods={list(self.methods)} must be a non-empty subset of "
                             f"{list(COMPARISON_METHODS)}; drop {unknown}.")
        for name in ("l1_grid", "k_grid", "alpha_grid"):
            object.__setattr__(self, name, _check_grid(getattr(self, name), name, integer=name == "k_grid"))
        if not (isinstance(self.target_l0, (int, float)) and np.isfinite(self.target_l0) and self.target_l0 > 0):
            raise ValueError(f"target_l0={self.target_l0!r} must be a finite number > 0, in active latents per "
                             "token; e.g. target_l0=32.")

    @property
    def sweep(self) -> bool:
        """Whether any sparsity grid is given: then every method is swept and matched on validation L0."""
        return bool(self.l1_grid or self.k_grid or self.alpha_grid)

    def grid(self, method: str) -> tuple:
        """Values of ``method``'s sparsity knob (:data:`SPARSITY_KNOBS`) the sweep tries, in grid order."""
        if method == "sae_topk":
            return self.k_grid or (self.k,)
        if method == "sparse_coding":
            return self.alpha_grid or (self.l1_coefficient / 2,)
        return self.l1_grid or (self.l1_coefficient,)

    def hparams(self, method: str, value=None) -> dict:
        """Config overrides of ``method``, its sparsity knob set to ``value`` (default: the single setting).

        The ITO alpha is the SAE's l1 / 2 (and sparse coding's default alpha is l1_coefficient / 2),
        so the per-sample objective 0.5||x - zD||^2 + alpha||z||_1 is the SAE loss halved.
        """
        l1 = self.l1_coefficient if value is None or method in ("sae_topk", "sparse_coding") else value
        alpha = self.l1_coefficient / 2 if value is None or method != "sparse_coding" else value
        return {
            "sae": {"l1_coefficient": l1},
            "sae_topk": {} if value is None else {"k": int(value)},
            "mlp": {"l1_coefficient": l1, "hidden": (self.mlp_hidden,), "fit_output_to_decoder": self.mlp_fit_output,
                    "init_rows": self.mlp_init_rows},
            "sae_ito": {"l1_coefficient": l1, "ito_alpha": l1 / 2, "ito_tol": self.fista_tol,
                        "ito_max_iter": self.fista_max_iter},
            "sparse_coding": {"alpha": alpha, "tol": self.fista_tol, "max_iter": self.fista_max_iter,
                              "fit_max_iter": self.fit_max_iter},
        }[method]

    def to_dict(self) -> dict:
        return {**self.__dict__, "methods": list(self.methods),
                **{name: list(getattr(self, name)) for name in ("l1_grid", "k_grid", "alpha_grid")}}


def _check_grid(values, name: str, *, integer: bool) -> tuple:
    """A sparsity grid as a tuple: distinct positive numbers (ints for ``k_grid``); empty means no sweep."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name}={values!r} must be a sequence of numbers, e.g. {name}=(0.03, 0.1, 0.3).")
    values = tuple(values)
    for v in values:
        if integer:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}={list(values)} must hold integers >= 1; {v!r} is not one. "
                                 "Pass TopK sizes such as (16, 32, 64).")
        elif isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v) or v <= 0:
            raise ValueError(f"{name}={list(values)} must hold finite numbers > 0; {v!r} is not one.")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}={list(values)} repeats a value; each grid point trains a model, so list each once.")
    return tuple(int(v) for v in values) if integer else tuple(float(v) for v in values)


@dataclass(frozen=True)
class MethodResult:
    """One method's numbers on the held-out tokens."""

    method: str
    steps: int                   # training steps it was given within the budget
    train_flops: int             # FLOPs of all training steps taken
    inference_flops_per_token: float
    explained_variance: float    # on the held-out tokens
    mean_l0: float               # mean active latents per held-out token
    dead_latents: int            # latents never active on the scored train + held-out tokens
    detection: dict              # DetectionScores.summary() on held-out tokens
    chance_f1: float             # median F1 of the shuffled-codes baseline
    train_seconds: float
    examples: list               # example latents: index, F1, associated tokens, top contexts
    setting: dict = field(default_factory=dict)  # the sparsity knob and its value, e.g. {"k": 32}

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SweepPoint:
    """One grid point of the sparsity sweep, measured on the validation rows only."""

    method: str
    knob: str                    # SPARSITY_KNOBS[method]
    value: float                 # the knob's value at this point
    steps: int                   # training steps within the budget
    train_flops: int
    val_explained_variance: float
    val_l0: float                # mean active latents per validation row
    val_dead_latents: int        # latents never active on the validation rows
    selected: bool               # closest validation L0 to the target among the method's points

    def to_dict(self) -> dict:
        return dict(self.__dict__)


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


@dataclass(frozen=True)
class ActivationsComparison:
    """Result of :func:`compare_encoders_on_activations`."""

    config: dict
    metadata: dict               # model, hook, corpus of the activations
    scale: float                 # activations were divided by this (E||x||^2 = 1 on the training rows)
    budget_flops: int            # training FLOP budget of every method
    methods: list                # MethodResult per method
    comparisons: list            # per method vs the ReLU SAE: Comparison dicts with Holm-adjusted p
    saelens_exports: dict        # method -> {"path", "round_trip_max_abs_diff"}
    report_path: str
    sweep: list = field(default_factory=list)  # SweepPoint per method and grid point (empty without a sweep)

    def to_dict(self) -> dict:
        return {"config": self.config, "metadata": self.metadata, "scale": self.scale,
                "budget_flops": self.budget_flops, "methods": [m.to_dict() for m in self.methods],
                "comparisons": self.comparisons, "saelens_exports": self.saelens_exports,
                "report_path": self.report_path, "sweep": [p.to_dict() for p in self.sweep]}

    def render_text(self) -> str:
        """A fixed-width table of the methods."""
        lines = [f"{self.metadata.get('model')} {self.metadata.get('hook_name')}: training budget "
                 f"{self.budget_flops:.3g} FLOPs per method"]
        if self.sweep:
            lines += [f"sparsity sweep on {self.config['n_val']} validation rows, target L0 {self.config['target_l0']:g} "
                      "(* = kept)",
                      f"{'method':<14}{'knob':>16}{'value':>10}{'steps':>7}{'val EV':>8}{'val L0':>8}{'dead':>6}"]
            for p in self.sweep:
                lines.append(f"{p.method:<14}{p.knob:>16}{p.value:>10.4g}{p.steps:>7}{p.val_explained_variance:>8.3f}"
                             f"{p.val_l0:>8.1f}{p.val_dead_latents:>6}{' *' if p.selected else ''}")
            lines.append("held-out tokens, the kept models:")
        lines += [f"{'method':<14}{'setting':>18}{'steps':>7}{'train FLOPs':>13}{'inf FLOPs/tok':>15}{'EV':>8}{'L0':>8}"
                 f"{'dead':>6}{'median F1':>11}{'chance F1':>11}"]
        for m in self.methods:
            setting = ", ".join(f"{key}={value:g}" for key, value in m.setting.items())
            lines.append(f"{m.method:<14}{setting:>18}{m.steps:>7}{m.train_flops:>13.3g}{m.inference_flops_per_token:>15.3g}"
                         f"{m.explained_variance:>8.3f}{m.mean_l0:>8.1f}{m.dead_latents:>6}"
                         f"{m.detection['median_f1']:>11.3f}{m.chance_f1:>11.3f}")
        for c in self.comparisons:
            lines.append(f"F1 {c['name_a']} vs {c['name_b']}: Cliff's delta {c['cliffs_delta']:+.3f}, "
                         f"Holm p {c['p_holm']:.3g} (n={c['n_a']}, {c['n_b']})")
        lines.append(f"report: {self.report_path}")
        return "\n".join(lines)


def _budgeted_steps(model, budget: int, batch: int, X, lr, seed, device) -> int:
    """Steps of ``model`` that fit in ``budget`` FLOPs once its data initialisation is paid
    (a short pilot for data-dependent costs)."""
    import copy

    from .encoders import SparseCoding
    from .training import TrainConfig, train

    if isinstance(model, SparseCoding):
        pilot = copy.deepcopy(model)
        history = train(pilot, X, TrainConfig(steps=_PILOT_STEPS, batch_size=batch, lr=lr, seed=seed,
                                              progress=False), device=device)
        per_step = history.flops.total / _PILOT_STEPS
    else:
        per_step = model.flops(batch, stage="train").total
    left = budget - model.flops(len(X), stage="init").total
    if left < per_step:
        raise ValueError(f"{type(model).__name__} spends {budget - left:.3g} FLOPs initialising on {len(X)} rows, "
                         f"leaving less than one step of the {budget:.3g}-FLOP budget; raise steps or train on fewer rows.")
    return int(left // per_step)


def compare_encoders_on_activations(train_path, test_path, out_dir, *, config: ComparisonConfig | None = None,
                                    seed: int = 0, device=None, progress: bool = False) -> ActivationsComparison:
    """Train every method on the same activations within the same FLOP budget; score and report.

    Every method sees the same scaled training rows (``E||x||^2 = 1``), batch size and
    learning rate, and gets as many steps as fit in the FLOP budget of ``config.steps`` ReLU-SAE
    steps (:mod:`gaptheory.flops`; sparse coding's data-dependent step cost is measured by a
    short pilot). On held-out tokens (other documents) it reports explained variance, L0, dead
    latents, inference FLOPs per token and the detection scores of :func:`detection_scores`,
    compares each method's per-latent F1 with the ReLU SAE's (:func:`compare_scores`, Holm
    adjusted), exports each SAE in the SAELens layout and checks it loads back identically, and
    writes ``results.json`` and ``report.md`` into ``out_dir``.

    With a sparsity grid (``config.l1_grid``, ``k_grid`` or ``alpha_grid``; see
    :meth:`ComparisonConfig.grid`) every method is first trained at each value of its sparsity
    knob (:data:`SPARSITY_KNOBS`), each run under the same budget, and measured on the
    validation rows only (EV, L0, dead latents; :class:`SweepPoint`). Per method the point whose
    validation L0 is closest to ``config.target_l0`` is kept (:func:`select_closest_l0`), and
    only the kept, sparsity-matched models are scored on the held-out tokens, as Gao et al.
    (2024) compare SAEs at matched L0. Without a grid each method trains once at the single
    shared setting.

    Parameters
    ----------
    train_path, test_path : str or Path
        Activation files of the training and held-out splits (:func:`gaptheory.activations.extract_split`).
    out_dir : str or Path
    config : ComparisonConfig, optional
    seed : int
        Seed of every model initialisation and batch order.
    device : str or torch.device, optional
    progress : bool

    Returns
    -------
    ActivationsComparison
        ``sweep`` lists every grid point (empty without a grid).

    Raises
    ------
    ValueError
        If the files differ in width, model or hook, the training file is too short for
        ``n_val`` plus one batch, or a ``k_grid`` value exceeds N = expansion x M.

    References
    ----------
    .. [1] Gao et al. (2024), "Scaling and evaluating sparse autoencoders", arXiv 2406.04093.
    """
    import json
    from pathlib import Path

    from .activations import load_activations
    from .encoders import Encoder, SparseAutoencoder
    from .metrics import dead_latents, explained_variance, mean_l0
    from .experiments.settings import build_model
    from .training import TrainConfig, train

    config = ComparisonConfig() if config is None else config
    check_int(seed, "seed", minimum=0)
    train_acts, test_acts = load_activations(train_path), load_activations(test_path)
    if train_acts.X.shape[1] != test_acts.X.shape[1]:
        raise ValueError(f"train ({train_acts.X.shape[1]}) and test ({test_acts.X.shape[1]}) activations have "
                         "different widths; extract both with the same model and hook.")
    for key in ("model", "hook_name"):
        if train_acts.metadata.get(key) != test_acts.metadata.get(key):
            raise ValueError(f"train and test activations differ in {key}: {train_acts.metadata.get(key)!r} vs "
                             f"{test_acts.metadata.get(key)!r}; extract both with the same settings.")
    T = train_acts.X.shape[0]
    if T <= config.n_val + config.batch_size:
        raise ValueError(f"the training file has {T} tokens, too few for n_val={config.n_val} plus one batch of "
                         f"{config.batch_size}; extract more tokens or lower n_val.")
    M = train_acts.X.shape[1]
    N = config.expansion * M
    fit_rows = train_acts.X[: T - config.n_val].astype(np.float64)
    scale = float(np.sqrt((fit_rows ** 2).sum(1).mean()))
    X_fit, X_val = fit_rows / scale, train_acts.X[T - config.n_val:].astype(np.float64) / scale
    n_score = min(config.n_score_train, T - config.n_val)
    X_score, ids_score = X_fit[:n_score], train_acts.token_ids[:n_score]
    n_test = min(config.n_score_test, test_acts.X.shape[0])
    X_test, ids_test = test_acts.X[:n_test].astype(np.float64) / scale, test_acts.token_ids[:n_test]
    vocab = {**_vocab_of(train_acts.metadata), **_vocab_of(test_acts.metadata)}

    if config.sweep:
        check_k(max(config.grid("sae_topk")), N, "the largest k_grid value")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = build_model("sae", N, M, config.k, hparams=config.hparams("sae"), seed=seed)
    budget = reference.flops(config.batch_size, stage="train").total * config.steps

    def fit(method, value=None):
        model = build_model(method, N, M, config.k, hparams=config.hparams(method, value), seed=seed)
        steps = _budgeted_steps(model, budget, config.batch_size, X_fit, config.lr, seed, device)
        history = train(model, X_fit, TrainConfig(steps=steps, batch_size=config.batch_size, lr=config.lr,
                                                  eval_every=max(1, steps // 10), seed=seed, progress=progress),
                        X_val=X_val, device=device)
        return model, history

    if config.sweep:
        chosen, sweep = _sparsity_sweep(config, fit, X_val, N, M, seed)
    else:
        sweep = []
        chosen = {method: (*fit(method), config.hparams(method)) for method in config.methods}

    results, f1s, exports = [], {}, {}
    for method in config.methods:
        model, history, hparams = chosen[method]
        Z_test, flops = model.encode_with_flops(X_test)
        Z_score = model.encode(X_score)
        scores = detection_scores(Z_score, ids_score, Z_test, ids_test)
        chance = shuffled_baseline(Z_score, ids_score, Z_test, ids_test, seed=seed)
        f1s[method] = scores.f1
        examples = _example_latents(scores, Z_test, ids_test, test_acts.window_ids[:n_test], vocab,
                                    config.n_examples)
        knob = SPARSITY_KNOBS[method]
        setting = {knob: hparams[knob] if knob in hparams else model.cfg.k}
        results.append(MethodResult(
            method=method, steps=history.steps_run, train_flops=int(history.flops.total),
            inference_flops_per_token=flops.total / n_test,
            explained_variance=explained_variance(X_test, model.decode(Z_test)), mean_l0=mean_l0(Z_test),
            dead_latents=dead_latents(np.vstack([Z_score, Z_test])), detection=scores.summary(),
            chance_f1=float(np.median(chance.f1)) if chance.f1.size else float("nan"),
            train_seconds=history.seconds, examples=examples, setting=setting))
        if isinstance(model, SparseAutoencoder):  # ReLU, TopK and the SAE under ITO
            exports[method] = _export_and_reload(model, out_dir / "saes" / method, X_test[:256], Encoder)

    comparisons = []
    if "sae" in f1s:
        others = [m for m in config.methods if m != "sae" and f1s[m].size and f1s["sae"].size]
        raw = [compare_scores(f1s[m], f1s["sae"], name_a=m, name_b="sae") for m in others]
        adjusted = holm([c.p_value for c in raw]) if raw else []
        comparisons = [{**c.to_dict(), "p_holm": float(p)} for c, p in zip(raw, adjusted)]

    report_path = out_dir / "report.md"
    comparison = ActivationsComparison(config.to_dict(), dict(train_acts.metadata), scale, int(budget), results,
                                       comparisons, exports, str(report_path), sweep)
    _write_atomic(out_dir / "results.json", json.dumps(comparison.to_dict(), indent=2, sort_keys=True, default=float))
    _write_atomic(report_path, render_markdown(comparison))
    return comparison


def _sparsity_sweep(config: ComparisonConfig, fit, X_val, N: int, M: int, seed: int):
    """Train every method at each point of its grid; keep, per method, the point closest to the target L0.

    Only ``X_val`` (the last ``n_val`` training rows, never trained on) is encoded here. SAE + ITO
    reuses the ReLU SAE trained at the same l1 (training is that of the SAE) and refines its codes
    with alpha = l1 / 2. Returns ``({method: (model, history, hparams)}, [SweepPoint, ...])``.
    """
    import logging

    from .metrics import dead_latents, explained_variance, mean_l0
    from .experiments.settings import build_model

    log = logging.getLogger(__name__)
    saes, chosen, sweep = {}, {}, []
    for method in config.methods:
        candidates, points = [], []
        for value in config.grid(method):
            hparams = config.hparams(method, value)
            if method in ("sae", "sae_ito"):
                if value not in saes:
                    saes[value] = fit("sae", value)
                sae, history = saes[value]
                model = sae
                if method == "sae_ito":
                    model = build_model("sae_ito", N, M, config.k, hparams=hparams, seed=seed)
                    model.load_state_dict(sae.state_dict())
            else:
                model, history = fit(method, value)
            Z_val = model.encode(X_val)
            points.append(SweepPoint(method, SPARSITY_KNOBS[method], value, history.steps_run,
                                     int(history.flops.total), explained_variance(X_val, model.decode(Z_val)),
                                     mean_l0(Z_val), dead_latents(Z_val), False))
            candidates.append((model, history, hparams))
            log.info("sweep %s %s=%g: val EV %.3f, val L0 %.1f, %d dead, %.0f s", method, points[-1].knob, value,
                     points[-1].val_explained_variance, points[-1].val_l0, points[-1].val_dead_latents,
                     history.seconds)
        best = select_closest_l0([p.val_l0 for p in points], config.target_l0)
        points[best] = dataclasses.replace(points[best], selected=True)
        chosen[method] = candidates[best]
        sweep += points
    return chosen, sweep


def _vocab_of(metadata: dict) -> dict:
    """Token id -> string, from the ``token_strings`` the activations file records."""
    import json

    return {int(k): v for k, v in json.loads(metadata.get("token_strings", "{}")).items()}


def _example_latents(scores: DetectionScores, Z, token_ids, window_ids, vocab, n_examples: int) -> list:
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


def _export_and_reload(model, path, X_check, encoder_class) -> dict:
    """Save in the SAELens layout, load back, and measure the largest code difference."""
    model.save(path)
    loaded = encoder_class.load(path, device="cpu")
    difference = float(np.abs(loaded.encode(X_check) - model.to("cpu").encode(X_check)).max())
    return {"path": str(path), "round_trip_max_abs_diff": difference}


def _write_atomic(path, text: str) -> None:
    import os

    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def render_markdown(comparison: ActivationsComparison) -> str:
    """The short Markdown report: setup, the table, the statistics, example latents."""
    meta, cfg = comparison.metadata, comparison.config
    lines = [
        "# SAE vs richer encoders on real transformer activations",
        "",
        f"Activations: `{meta.get('model')}` `{meta.get('hook_name')}`, corpus `{meta.get('corpus')}` "
        f"(train split; held-out documents for every metric), scaled by 1/{comparison.scale:.4g} so that "
        f"E||x||^2 = 1. N = {cfg['expansion']} x M; every method gets the FLOP budget of {cfg['steps']} "
        f"ReLU-SAE steps ({comparison.budget_flops:.3g} FLOPs) at batch {cfg['batch_size']}, lr {cfg['lr']}.",
        "",
    ]
    if comparison.sweep:
        lines += [f"## Sparsity sweep (validation: the last {cfg['n_val']} training rows)", "",
                  f"Each method trained at every grid point under the same budget; the point whose validation L0 "
                  f"is closest to {cfg['target_l0']:g} is kept (**bold**) and only the kept models are scored on "
                  "held-out tokens below.", "",
                  "| method | knob | value | steps | val EV | val L0 | val dead |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for p in comparison.sweep:
            mark = "**" if p.selected else ""
            lines.append(f"| {p.method} | {p.knob} | {mark}{p.value:g}{mark} | {p.steps} | "
                         f"{p.val_explained_variance:.3f} | {p.val_l0:.1f} | {p.val_dead_latents} |")
        lines += ["", "## Held-out tokens (the kept models)", ""]
    lines += [
        "| method | setting | steps | train FLOPs | inference FLOPs/token | EV | L0 | dead | median F1 | mean F1 | "
        "chance F1 | scored latents |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in comparison.methods:
        d = m.detection
        setting = ", ".join(f"{key} {value:g}" for key, value in m.setting.items())
        lines.append(f"| {m.method} | {setting} | {m.steps} | {m.train_flops:.3g} | {m.inference_flops_per_token:.3g} | "
                     f"{m.explained_variance:.3f} | {m.mean_l0:.1f} | {m.dead_latents} | {d['median_f1']:.3f} | "
                     f"{d['mean_f1']:.3f} | {m.chance_f1:.3f} | {d['n_scored']} |")
    lines += ["", "Detection F1: a latent's firing on held-out tokens as a predictor of the tokens it was "
              "most associated with on training tokens (chosen on training text only); chance F1 pairs "
              "the held-out codes with shuffled tokens.", ""]
    if comparison.comparisons:
        lines += ["| F1 of | vs | Cliff's delta | Mann-Whitney U | p (Holm) | n latents |",
                  "| --- | --- | ---: | ---: | ---: | --- |"]
        for c in comparison.comparisons:
            lines.append(f"| {c['name_a']} | {c['name_b']} | {c['cliffs_delta']:+.3f} | {c['u_statistic']:.0f} | "
                         f"{c['p_holm']:.3g} | {c['n_a']} vs {c['n_b']} |")
        lines += ["", "Cliff's delta > 0: the method's latents tend to score higher than the ReLU SAE's. "
                  "Latents of one model are not independent samples; read the effect size first.", ""]
    lines.append("## Example latents (highest held-out F1)")
    for m in comparison.methods:
        lines += ["", f"### {m.method}"]
        for ex in m.examples:
            lines.append(f"- latent {ex['latent']}: F1 {ex['f1']:.2f} (P {ex['precision']:.2f}, R {ex['recall']:.2f}); "
                         f"tokens {', '.join(repr(t) for t in ex['associated'])}")
            lines += [f"  - `{text}`" for text in ex["contexts"]]
    if comparison.saelens_exports:
        lines += ["", "## SAELens export", ""]
        for method, info in comparison.saelens_exports.items():
            lines.append(f"- {method}: `{info['path']}` (round trip max |dz| = {info['round_trip_max_abs_diff']:.2g})")
    return "\n".join(lines) + "\n"
