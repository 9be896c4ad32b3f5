"""The method registry: each method name, its encoder architecture and the settings it runs in.

A *method* is what a sweep, :func:`~gaptheory.experiments.settings.run_setting` and the
CLI call an encoder trained one way: ``sae`` is the ReLU SAE, ``best_subset`` is sparse coding
with exact K-sparse inference, ``mlp_<h>`` an MLP encoder with hidden width h. :data:`METHODS`
is the only list of them; the architectures behind them are
:data:`gaptheory.encoders.ENCODERS`. This module imports no torch, so sweeps are checked
before any model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._validation import check_choice

#: The paper's three settings: (1) known dictionary, (2) known codes, (3) both unknown.
SETTINGS = ("known_dictionary", "known_codes", "unknown")
#: Setting numbers of the paper, accepted as aliases.
SETTING_ALIASES = {1: "known_dictionary", 2: "known_codes", 3: "unknown"}


@dataclass(frozen=True)
class Method:
    """One method: the encoder it builds and where it applies.

    Attributes
    ----------
    architecture : str
        Key of :data:`gaptheory.encoders.ENCODERS`.
    settings : tuple of str
        The settings of :data:`SETTINGS` it runs in.
    defaults : dict
        Config overrides of the architecture's own defaults.
    K_fields : tuple of str
        Config fields that default to the task's K (e.g. TopK's ``K``).
    sparsity : str or None
        The config field that sets how sparse its codes are (swept on real activations);
        None where the method has none to tune.
    """

    architecture: str
    settings: tuple = SETTINGS
    defaults: dict = field(default_factory=dict)
    K_fields: tuple = ()
    sparsity: str | None = None


#: Every method. ``mlp_<h>`` (e.g. ``mlp_256``) is ``mlp`` with one hidden layer of width h;
#: ``sparse_coding`` in setting 1 is per-sample inference on the true dictionary (no training);
#: ``best_subset`` is sparse coding with exact K-sparse inference
#: (:func:`gaptheory.solvers.best_subset`) instead of the LASSO.
METHODS: dict[str, Method] = {
    "sae": Method("standard", sparsity="l1_coefficient"),
    "sae_topk": Method("topk", K_fields=("K",), sparsity="K"),
    "sae_jumprelu": Method("jumprelu", sparsity="l0_coefficient"),
    "mlp": Method("mlp", sparsity="l1_coefficient"),
    "sae_ito": Method("sae_ito", ("known_dictionary", "unknown"), sparsity="l1_coefficient"),
    "sparse_coding": Method("sparse_coding", ("known_dictionary", "unknown"), sparsity="alpha"),
    # Exact K-sparse search: its K is the task's, and it is feasible at small N only.
    "best_subset": Method("sparse_coding", ("known_dictionary", "unknown"), {"inference": "best_subset"}, ("K",)),
}


def parse_method(method: str) -> tuple[str, dict]:
    """The registry name of ``method`` and the options its name implies.

    Examples
    --------
    >>> parse_method("mlp_256")
    ('mlp', {'hidden': (256,)})
    >>> parse_method("sae")
    ('sae', {})
    """
    if isinstance(method, str) and method.startswith("mlp_"):
        widths = method[4:].split("_")
        if all(w.isdigit() and int(w) > 0 for w in widths):
            return "mlp", {"hidden": tuple(int(w) for w in widths)}
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {sorted(METHODS)} or "
                         "'mlp_<width>' (e.g. 'mlp_256').")
    return method, {}


def check_setting(setting) -> str:
    """``setting`` as a name of :data:`SETTINGS` (the paper's numbers 1-3 accepted)."""
    if setting in SETTING_ALIASES:
        return SETTING_ALIASES[setting]
    return check_choice(setting, "setting", SETTINGS)


def check_method_in_setting(method: str, setting) -> tuple[str, str]:
    """``(registry name, setting name)``; ValueError when the method does not run in the setting."""
    setting = check_setting(setting)
    base, _ = parse_method(method)
    if setting not in METHODS[base].settings:
        raise ValueError(f"method={method!r} does not run in setting={setting!r}; it runs in "
                         f"{list(METHODS[base].settings)}.")
    return base, setting
