"""The atomic writer every result and artifact goes through, and the writers that use it."""

import ast
import errno
import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from gaptheory._io import _umask, atomic_file, atomic_path, write_atomic

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gaptheory"


def _gap_records():
    return [{"kind": "gap", "N": 8, "M": M, "K": 2, "seed": seed, "eps_star": 0.1 * M + seed,
             "gap_lower_bound": 0.05 * M} for M in (2, 4) for seed in range(2)]


def _write_bytes(folder: Path, seed: int) -> None:
    write_atomic(folder / "out.bin", np.random.default_rng(seed).bytes(1 << 16))


def _write_text_in_pieces(folder: Path, seed: int) -> None:
    with atomic_file(folder / "out.txt", "w") as handle:
        for i in range(100):
            handle.write(f"seed {seed} line {i} é\n")


def _write_figure(folder: Path, seed: int) -> None:
    from gaptheory.report import plot

    plot(_gap_records()[: 3 + seed % 2], "gap", folder / "fig.png")


def _save_encoder(folder: Path, seed: int) -> None:
    from gaptheory.encoders import SAEConfig, SparseAutoencoder

    SparseAutoencoder(SAEConfig(M=4, N=6), seed=seed).save(folder)


def _extract_activations(folder: Path, seed: int) -> None:
    from gaptheory.activations import extract_activations, tiny_bert

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "fire", "town"]
    loaded = tiny_bert(vocab, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                       max_position_embeddings=16, seed=seed)
    extract_activations(loaded, ["the fire town the fire"] * 3, folder / "acts.safetensors", layer=0,
                        max_tokens=12, context_length=8)


#: Each writer, with the files it writes into the folder it is given.
WRITERS = {
    "write_atomic": (_write_bytes, ["out.bin"]),
    "atomic_file": (_write_text_in_pieces, ["out.txt"]),
    "report.plot": (_write_figure, ["fig.png"]),
    "Encoder.save": (_save_encoder, ["sae_weights.safetensors", "cfg.json"]),
    "extract_activations": (_extract_activations, ["acts.safetensors"]),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: (os.readlink(p).encode() if p.is_symlink() else p.read_bytes()) for p in folder.iterdir()}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_symlink_planted_at_the_temporary_name_is_not_followed(writer, tmp_path, monkeypatch):
    write, targets = WRITERS[writer]
    folder, victim = tmp_path / "out", tmp_path / "victim"
    folder.mkdir()
    victim.write_bytes(b"not yours")
    # The names tempfile tries, in order: the first is taken by a planted symlink at the temporary's
    # name; mkstemp must refuse it (O_EXCL) and move on. The old predictable names are planted too.
    monkeypatch.setattr(tempfile, "_get_candidate_names",
                        lambda: itertools.chain(["planted"], (f"fresh{i}" for i in itertools.count())))
    planted = [f".{t}.planted.tmp" for t in targets] + [f".{t}.{os.getpid()}.tmp" for t in targets] \
        + [f"{t}.{os.getpid()}.tmp" for t in targets]
    for name in planted:
        (folder / name).symlink_to(victim)
    write(folder, seed=0)
    assert victim.read_bytes() == b"not yours"
    assert all(os.readlink(folder / name) == str(victim) for name in planted)
    for target in targets:
        assert not (folder / target).is_symlink() and (folder / target).stat().st_size > 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(planted + targets)  # no temporary left


@pytest.mark.parametrize("writer", WRITERS)
def test_a_failure_before_the_rename_leaves_the_old_files_and_no_temporary(writer, tmp_path, monkeypatch):
    write, targets = WRITERS[writer]
    write(tmp_path, seed=0)
    before = _snapshot(tmp_path)

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the data is written; making it durable fails
    with pytest.raises(OSError, match="No space") as failure:
        write(tmp_path, seed=1)
    monkeypatch.undo()
    assert Path(failure.value.filename).parent == tmp_path and Path(failure.value.filename).name in targets
    assert _snapshot(tmp_path) == before
    write(tmp_path, seed=1)  # the same writer with a working disk does replace them
    assert set(_snapshot(tmp_path)) == set(before) and _snapshot(tmp_path) != before


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    write_atomic(target, "old")
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_file(target, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("mid-write")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as temporary:
            temporary.write_text("half of the new")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_file_size_limit_hit_mid_write_keeps_the_old_file(tmp_path):
    """A real short write: the kernel refuses bytes past RLIMIT_FSIZE (EFBIG), as a full disk does (ENOSPC)."""
    target = tmp_path / "out.bin"
    write_atomic(target, b"old")
    script = (
        "import resource, signal, sys\n"
        "from gaptheory._io import write_atomic\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))\n"
        "try:\n"
        "    write_atomic(sys.argv[1], bytes(1 << 20))\n"
        "except OSError as error:\n"
        "    print(error.errno)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(errno.EFBIG)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_the_data_is_complete_and_has_the_usual_permissions(tmp_path):
    data = np.random.default_rng(0).bytes(3 << 20)
    target = write_atomic(tmp_path / "big.bin", data)
    assert target.read_bytes() == data
    write_atomic(target, "ünïcode\n" * 1000)
    assert target.read_text(encoding="utf-8") == "ünïcode\n" * 1000
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's private 0600
    mask = _umask()
    assert os.umask(mask) == mask  # the umask read is the process's, and reading it changed nothing
    with pytest.raises(ValueError, match="mode"):
        with atomic_file(target, "a"):
            pass


#: Calls that write a file: by the attribute or function name, and by (module, function).
_WRITING_NAMES = {"write_text", "write_bytes", "savefig", "save_file", "tofile", "to_csv"}
_WRITING_FUNCTIONS = {("np", "save"), ("np", "savez"), ("np", "savetxt"), ("torch", "save"), ("json", "dump"),
                      ("pickle", "dump")}
#: Writes that are not results: the kernel's own file. (A tokenizer's folder, which transformers writes
#: through ``save_pretrained``, is not a result either and is not atomic.)
_NOT_RESULTS = {("bench.py", "/proc/self/clear_refs")}


def _is_write(node: ast.Call) -> bool:
    function = node.func
    name = getattr(function, "attr", getattr(function, "id", ""))
    owner = getattr(getattr(function, "value", None), "id", None)
    if name == "open":
        modes = [a.value for a in node.args[1:2]] + [k.value.value for k in node.keywords if k.arg == "mode"]
        return any(isinstance(m, str) and set(m) & set("wax+") for m in modes)
    return name in _WRITING_NAMES or (owner, name) in _WRITING_FUNCTIONS


def _writes_outside_the_atomic_writer(path: Path) -> list[str]:
    text = path.read_text()
    tree = ast.parse(text)
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(
                isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id", "")
                in {"atomic_file", "atomic_path"} for item in node.items):
            inside |= {id(child) for child in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and id(node) not in inside and _is_write(node):
            source = ast.get_source_segment(text, node) or ""
            if not any(path.name == file and marker in source for file, marker in _NOT_RESULTS):
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {source[:80]}")
    return found


def test_every_writer_in_the_package_goes_through_the_atomic_writer():
    found = [line for path in sorted(PACKAGE.rglob("*.py")) if path.name != "_io.py"
             for line in _writes_outside_the_atomic_writer(path)]
    assert not found, "write through gaptheory._io (atomic_file, atomic_path, write_atomic):\n" + "\n".join(found)


def test_the_writer_scan_sees_a_plain_write(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import json\ndef f(p, d):\n    p.write_text('x')\n    json.dump(d, open(p, mode='w'))\n"
                     "    with atomic_file(p) as h:\n        h.write('y')\n")
    assert len(_writes_outside_the_atomic_writer(probe)) == 3  # write_text, json.dump, open(..., 'w')
