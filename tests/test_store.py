"""Results store: atomic records, concurrent writers, validation, flattened config and metric table."""
import json
import multiprocessing as mp

import pytest

from medsynbench.benchmark.store import write_record, flatten_config, load_records, metric_table


def _record(run_id, seed, gan, value, status="completed", size=50, evaluation_id="e1"):
    return {"run_id": run_id, "training_id": run_id, "evaluation_id": evaluation_id, "status": status, "seed": seed, "gan": gan, "dataset": "toy", "train_size": size,
            "config": flatten_config({"gan": {"name": gan}, "data": {"train_size": size}, "seed": seed}),
            "metrics": [{"metric": "fd_unet", "value": value, "higher_is_better": False, "extractor": "unet_encoder",
                         "weights": "trained:abc"}],
            "downstream": [{"metric": "dice_unet", "train_on": "synthetic", "value": value / 100,
                            "higher_is_better": True, "model": "unet-resnet18"}]}


def _writer(store, worker, count):
    for i in range(count):
        write_record(store, _record(f"w{worker}-{i}", i, "dcgan", float(i)))


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = load_records(tmp_path)
    assert len(records) == 100
    assert {r["run_id"] for r in records} == {f"w{w}-{i}" for w in range(4) for i in range(25)}


def test_half_written_temporary_is_ignored(tmp_path):
    write_record(tmp_path, _record("a", 0, "dcgan", 1.0))
    # what a writer killed mid-write leaves behind: a hidden temporary, never a *.json record
    (tmp_path / "records" / ".2026-x.json.abc.tmp").write_text('{"run_id": "half')
    assert [r["run_id"] for r in load_records(tmp_path)] == ["a"]


def test_corrupt_record_names_the_file(tmp_path):
    write_record(tmp_path, _record("a", 0, "dcgan", 1.0))
    bad = tmp_path / "records" / "zzz-bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="zzz-bad.json"):
        load_records(tmp_path)


def test_record_validation(tmp_path):
    with pytest.raises(ValueError, match="status"):
        write_record(tmp_path, {**_record("a", 0, "dcgan", 1.0), "status": "weird"})
    with pytest.raises(ValueError, match="run_id"):
        write_record(tmp_path, {"status": "completed", "config": {}})
    with pytest.raises(ValueError, match="evaluation_id"):
        write_record(tmp_path, {"run_id": "a", "training_id": "a", "status": "completed", "config": {}})


def test_one_record_per_training_and_evaluation(tmp_path):
    """The same (training id, evaluation id) replaces its record; another evaluation of the training adds one."""
    first = write_record(tmp_path, _record("a", 0, "dcgan", 1.0))
    again = write_record(tmp_path, _record("a", 0, "dcgan", 2.0))
    other = write_record(tmp_path, _record("a", 0, "dcgan", 3.0, evaluation_id="e2"))
    assert first == again != other
    records = load_records(tmp_path)
    assert sorted((r["evaluation_id"], r["metrics"][0]["value"]) for r in records) == [("e1", 2.0), ("e2", 3.0)]
    assert {r["record_id"] for r in records} == {"a--e1", "a--e2"}
    # an older store with two files of one record id: the newest wins
    legacy = dict(records[0], recorded_at="1999-01-01T00:00:00+00:00", metrics=[])
    (tmp_path / "records" / "old-copy.json").write_text(json.dumps(legacy))
    assert len(load_records(tmp_path)) == 2 and all(r["metrics"] for r in load_records(tmp_path))


# Leaderboard behaviour (grouping, seeds, CI, marks, files) is tested in tests/test_leaderboard.py.


def test_flatten_config_and_table():
    flat = flatten_config({"a": {"b": 1, "c": [1, 2]}, "d": None})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": None}
    table = metric_table([_record("r", 0, "dcgan", 3.0)])
    assert set(table["metric"]) == {"fd_unet", "dice_unet@synthetic"}
    assert json.loads(table["cfg.seed"].astype(str).iloc[0]) == 0
