import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.experiments.store import ResultStore, canonical_json, task_key

scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=8), st.booleans(), st.none())
configs = st.dictionaries(st.text(min_size=1, max_size=6), scalars, max_size=6)


@pytest.fixture
def store(tmp_path):
    with ResultStore(tmp_path / "results.db") as s:
        yield s


@settings(max_examples=50)
@given(config=configs)
def test_task_key_does_not_depend_on_dict_order(config):
    reversed_config = dict(reversed(list(config.items())))
    assert task_key(config) == task_key(reversed_config)
    assert json.loads(canonical_json(config)) == config


@settings(max_examples=50)
@given(config=configs, extra=scalars)
def test_task_key_changes_when_a_value_changes(config, extra):
    changed = {**config, "__extra__": extra}
    assert task_key(changed) != task_key(config)


def test_put_then_read_back_the_same_record(store):
    record = {"key": "k1", "status": "ok", "N": 10, "mcc": 0.5, "method": "sae", "flag": True, "none": None}
    assert store.put(record)
    assert store.has("k1") and not store.has("k2")
    assert store.records() == [record]
    assert store.records(method="sae") == [record] and store.records(method="other") == []


def test_an_ok_record_is_never_duplicated_or_overwritten(store):
    assert store.put({"key": "k1", "status": "ok", "x": 1})
    assert not store.put({"key": "k1", "status": "ok", "x": 2})
    assert not store.put({"key": "k1", "status": "failed", "traceback": "t"})
    assert [r["x"] for r in store.records()] == [1] and len(store) == 1


def test_a_failed_record_is_replaced_by_a_later_success(store):
    assert store.put({"key": "k1", "status": "failed", "traceback": "Traceback ..."})
    assert not store.has("k1") and store.has("k1", ok_only=False)
    assert store.failures()[0]["traceback"] == "Traceback ..."
    assert store.put({"key": "k1", "status": "ok", "x": 3})
    assert store.failures() == [] and store.records()[0]["x"] == 3 and len(store) == 1


def test_store_uses_wal_and_a_unique_key(tmp_path):
    path = tmp_path / "r.db"
    ResultStore(path).close()
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.execute("INSERT INTO results VALUES ('a', 'ok', 0, '{}')")
    with pytest.raises(sqlite3.IntegrityError):
        connection.execute("INSERT INTO results VALUES ('a', 'ok', 0, '{}')")


def test_two_connections_see_each_others_commits(tmp_path):
    with ResultStore(tmp_path / "r.db") as writer, ResultStore(tmp_path / "r.db") as reader:
        writer.put({"key": "a", "status": "ok"})
        assert reader.keys() == {"a"} and reader.count("ok") == 1


@pytest.mark.parametrize(
    "record, message",
    [
        ({"status": "ok"}, "'key' field"),
        ({"key": "a"}, "'status' field"),
        ({"key": "a", "status": "done"}, "must be 'ok' or 'failed'"),
        ({"key": "a", "status": "ok", "x": [1, 2]}, "JSON scalar"),
        ({"key": "a", "status": "ok", "x": float("nan")}, "not finite"),
    ],
)
def test_put_rejects_malformed_records(store, record, message):
    with pytest.raises(ValueError, match=message):
        store.put(record)
    assert len(store) == 0


def test_store_in_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ResultStore(tmp_path / "nope" / "r.db")


def test_canonical_json_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        canonical_json({"x": float("nan")})


puts = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["ok", "failed"]), st.integers(0, 9)),
                max_size=20)


@settings(max_examples=40, deadline=None)
@given(sequence=puts)
def test_any_sequence_of_puts_leaves_one_row_per_key_keeping_the_first_success(tmp_path_factory, sequence):
    with ResultStore(tmp_path_factory.mktemp("s") / "r.db") as store:
        for key, status, value in sequence:
            store.put({"key": key, "status": status, "value": value})
        rows = store.records(status=None)
        assert sorted(r["key"] for r in rows) == sorted({key for key, _, _ in sequence})
        for row in rows:
            history = [(status, value) for key, status, value in sequence if key == row["key"]]
            successes = [value for status, value in history if status == "ok"]
            if successes:
                assert (row["status"], row["value"]) == ("ok", successes[0])
            else:
                assert (row["status"], row["value"]) == ("failed", history[-1][1])
