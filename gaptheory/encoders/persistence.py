"""SAELens 6 folders (``sae_weights.safetensors`` + ``cfg.json``), both directions.

:func:`save` writes what SAELens 6 reads as a current config (so ``sae_lens.SAE.load_from_disk``
gives gaptheory's codes) plus a ``gaptheory`` entry SAELens ignores; :func:`load` reads those
folders back, and folders SAELens itself saved (standard, topk, jumprelu).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .._device import resolve_device
from .._io import atomic_path, write_atomic
from .._validation import check_positive
from .base import Encoder, EncoderConfig
from .registry import ENCODERS, SAELENS_ARCHITECTURES

#: SAELens file names.
WEIGHTS_FILENAME, CONFIG_FILENAME = "sae_weights.safetensors", "cfg.json"

#: The SAELens config format ``save`` writes (read as current by SAELens >= 6).
SAELENS_FORMAT_VERSION = "6.0.0"


def save(model: Encoder, path, *, input_scale: float = 1.0, hook_name: str | None = None,
         model_name: str | None = None) -> Path:
    r"""Write ``sae_weights.safetensors`` and ``cfg.json`` in SAELens 6's format into ``path``.

    ``cfg.json`` holds SAELens's fields (``architecture``, ``d_in = M``, ``d_sae = N``,
    ``dtype``, ``apply_b_dec_to_input = False``, ``normalize_activations = "none"``, ``k``
    for TopK, and ``metadata`` with ``hook_name``, ``model_name``, ``sae_lens_version``)
    plus a ``gaptheory`` entry (the class, its config, seed, decoder state) that SAELens
    ignores. A model trained on ``X / input_scale`` is saved as one on raw ``X``:
    :math:`W_{enc} / s`, :math:`W_{dec} s`, :math:`b_{dec} s`, so SAELens (or
    :meth:`load`) on raw activations gives the same codes and ``s`` times the reconstruction.

    Parameters
    ----------
    path : str or Path
        Folder (created if missing).
    input_scale : float
        ``s > 0``, the divisor applied to the activations during training.
    hook_name, model_name : str, optional
        Where the activations came from (SAELens metadata).
    """
    from safetensors.torch import save_file

    input_scale = float(check_positive(input_scale, "input_scale"))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / WEIGHTS_FILENAME) as temporary:
        save_file(model._saelens_state(input_scale), str(temporary))
    metadata = {"sae_lens_version": SAELENS_FORMAT_VERSION, "model_name": model_name, "hook_name": hook_name,
                "input_scale_folded": input_scale}
    cfg = {"architecture": model.cfg.architecture, "d_in": model.cfg.M, "d_sae": model.cfg.N,
           "dtype": str(model.W_dec.dtype).removeprefix("torch."), "device": "cpu",
           "apply_b_dec_to_input": False, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": metadata,
           "gaptheory": {"encoder": type(model).__name__, "config": model.cfg.to_dict(), "seed": model.seed,
                         "decoder_trainable": model.decoder_trainable}}
    if model.cfg.architecture == "topk":
        cfg.update(k=model.cfg.K, rescale_acts_by_decoder_norm=False)  # SAELens names K "k"
    write_atomic(path / CONFIG_FILENAME, json.dumps(cfg, indent=2, sort_keys=True))
    return path


def load(path, *, expected: type[Encoder] = Encoder, device=None) -> Encoder:
    """Rebuild an encoder from a folder written by :func:`save` or by SAELens 6.

    SAELens folders (``standard``, ``topk``, ``jumprelu``) become the gaptheory class of that
    architecture (:data:`~gaptheory.encoders.ENCODERS`) with equal codes: where SAELens subtracts ``b_dec`` before
    encoding, ``b_enc - b_dec W_enc`` is folded into ``b_enc``; a TopK SAE that rescales
    by decoder norms gets ``W_enc n``, ``b_enc n``, ``W_dec / n``. The weights file's header
    is checked against ``cfg.json`` before anything is allocated. ``expected``: the class
    the folder must hold (or a subclass of it).

    Raises
    ------
    ValueError
        Missing, corrupt or truncated files; shapes that disagree with ``cfg.json``;
        NaN/inf weights; what gaptheory cannot represent (activation normalisation,
        reshaping, other architectures).
    """
    path = Path(path)
    cfg_file, weights_file = path / CONFIG_FILENAME, path / WEIGHTS_FILENAME
    if not cfg_file.is_file() or not weights_file.is_file():
        raise ValueError(f"{path} must contain {CONFIG_FILENAME} and {WEIGHTS_FILENAME} (a folder written by "
                         "Encoder.save or SAELens's save_model).")
    try:
        raw = json.loads(cfg_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{cfg_file} is not valid JSON ({err}); re-save the model.") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{cfg_file} must hold a JSON object; got {type(raw).__name__}.")
    own = raw.get("gaptheory")
    if isinstance(own, dict):
        target = ENCODERS.get(raw.get("architecture"))
        if target is None:
            raise ValueError(f"{cfg_file} names architecture {raw.get('architecture')!r}; known: {sorted(ENCODERS)}.")
        cfg = target.config_class.from_dict(own.get("config", {}))
        seed, trainable = own.get("seed", 0), own.get("decoder_trainable", True)
    else:
        target, cfg = _config_from_saelens(raw, cfg_file)
        seed, trainable = 0, True
    if not issubclass(target, expected):
        raise ValueError(f"{cfg_file} holds a {target.__name__}, not a {expected.__name__}; load it with Encoder.load.")
    tensors = _read_weights(weights_file, _expected_shapes(target, cfg))
    if own is None:
        tensors = _state_from_saelens(raw, tensors)
    model = target(cfg, seed=seed)
    if not trainable:
        model.W_dec.requires_grad_(False)
        model.b_dec.requires_grad_(False)
    model.load_state_dict({k: v.to(model.W_dec.dtype) for k, v in tensors.items()})
    model.data_initialised_ = True  # trained weights: no data-dependent re-initialisation
    return model.to(resolve_device(device))


def _config_from_saelens(raw: dict, cfg_file: Path) -> tuple[type[Encoder], EncoderConfig]:
    """The encoder class and config of a SAELens 6 ``cfg.json``; refuses what gaptheory cannot represent."""
    architecture = raw.get("architecture", "standard")
    if architecture not in SAELENS_ARCHITECTURES:
        raise ValueError(f"{cfg_file}: SAELens architecture {architecture!r} has no gaptheory equivalent; "
                         f"gaptheory loads {sorted(SAELENS_ARCHITECTURES)}.")
    for field_name, plain in (("normalize_activations", "none"), ("reshape_activations", "none")):
        if raw.get(field_name, plain) != plain:
            raise ValueError(f"{cfg_file}: {field_name}={raw[field_name]!r} is not representable in gaptheory "
                             f"(only {plain!r}); fold it into the weights before saving.")
    if raw.get("hook_head_index") is not None:
        raise ValueError(f"{cfg_file}: hook_head_index={raw['hook_head_index']!r} is not representable in gaptheory.")
    for name in ("d_in", "d_sae"):
        if not isinstance(raw.get(name), int) or isinstance(raw.get(name), bool) or raw[name] < 1:
            raise ValueError(f"{cfg_file}: {name} must be a positive integer; got {raw.get(name)!r}.")
    target = ENCODERS[architecture]
    extra = {"K": raw.get("k", 100)} if architecture == "topk" else {}  # 100: SAELens's default k
    return target, target.config_class(N=raw["d_sae"], M=raw["d_in"], **extra)


def _expected_shapes(target: type, cfg: EncoderConfig) -> dict:
    """Parameter shapes of ``target(cfg)`` computed without building it (nothing allocated)."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in target(cfg, seed=0).state_dict().items()}
    return shapes


def _read_weights(weights_file: Path, expected: dict) -> dict:
    """The tensors of ``weights_file``; its header (names, shapes) is checked against ``expected``
    before any tensor is read, and every tensor must be finite."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
            if set(shapes) != set(expected):
                raise ValueError(f"{weights_file} holds tensors {sorted(shapes)}; cfg.json implies "
                                 f"{sorted(expected)}; the files do not belong together.")
            for name, shape in shapes.items():
                if shape != expected[name]:
                    raise ValueError(f"{weights_file}: {name} has shape {shape}, but cfg.json implies "
                                     f"{expected[name]}; the files do not belong together.")
            tensors = {name: handle.get_tensor(name) for name in shapes}
    except SafetensorError as err:
        raise ValueError(f"{weights_file} is not a readable safetensors file ({err}); re-save the model.") from None
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{weights_file}: {name} has dtype {tensor.dtype}; weights must be floating point.")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{weights_file}: {name} contains NaN or inf; the model is corrupt.")
    return tensors


@torch.no_grad()
def _state_from_saelens(raw: dict, tensors: dict) -> dict:
    """SAELens weights as gaptheory's :class:`SparseAutoencoder` state with equal codes (float64 folds)."""
    t = {k: v.double() for k, v in tensors.items()}
    if raw.get("apply_b_dec_to_input", True):  # SAELens encodes (x - b_dec) W_enc + b_enc
        t["b_enc"] = t["b_enc"] - t["b_dec"] @ t["W_enc"]
    if raw.get("architecture") == "topk" and raw.get("rescale_acts_by_decoder_norm", False):
        norms = t["W_dec"].norm(dim=1)
        t["W_enc"], t["b_enc"], t["W_dec"] = t["W_enc"] * norms, t["b_enc"] * norms, t["W_dec"] / norms[:, None]
    if raw.get("architecture") == "jumprelu" and (t["threshold"] < 0).any():
        raise ValueError("a SAELens JumpReLU threshold is negative; gaptheory's JumpReLU needs thresholds >= 0.")
    return t

