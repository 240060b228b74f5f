"""Results store and leaderboard: atomic records, concurrent writers, mean ± std over seeds, sort direction."""
import json
import multiprocessing as mp

import numpy as np
import pytest

from benchmark.leaderboard import leaderboard, to_markdown, write_leaderboard
from benchmark.store import append_record, flatten_config, load_records, metric_table


def _record(run_id, seed, gan, value, status="completed", size=50):
    return {"run_id": run_id, "status": status, "seed": seed, "gan": gan, "dataset": "toy", "train_size": size,
            "config": flatten_config({"gan": {"name": gan}, "data": {"train_size": size}, "seed": seed}),
            "metrics": [{"metric": "fd_unet", "value": value, "higher_is_better": False, "extractor": "unet_encoder",
                         "weights": "trained:abc"}],
            "downstream": [{"metric": "dice_unet", "train_on": "synthetic", "value": value / 100,
                            "higher_is_better": True, "model": "unet-resnet18"}]}


def _writer(store, worker, count):
    for i in range(count):
        append_record(store, _record(f"w{worker}-{i}", i, "dcgan", float(i)))


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
    append_record(tmp_path, _record("a", 0, "dcgan", 1.0))
    # what a writer killed mid-write leaves behind: a hidden temporary, never a *.json record
    (tmp_path / "records" / ".2026-x.json.abc.tmp").write_text('{"run_id": "half')
    assert [r["run_id"] for r in load_records(tmp_path)] == ["a"]


def test_corrupt_record_names_the_file(tmp_path):
    append_record(tmp_path, _record("a", 0, "dcgan", 1.0))
    bad = tmp_path / "records" / "zzz-bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="zzz-bad.json"):
        load_records(tmp_path)


def test_record_validation(tmp_path):
    with pytest.raises(ValueError, match="status"):
        append_record(tmp_path, {**_record("a", 0, "dcgan", 1.0), "status": "weird"})
    with pytest.raises(ValueError, match="run_id"):
        append_record(tmp_path, {"status": "completed", "config": {}})


def test_leaderboard_mean_std_and_direction(tmp_path):
    values = {"dcgan": [10.0, 12.0, 14.0], "wgan_gp": [5.0, 7.0, 9.0]}
    for gan, vals in values.items():
        for seed, v in enumerate(vals):
            append_record(tmp_path, _record(f"{gan}-{seed}", seed, gan, v))
    append_record(tmp_path, _record("dcgan-div", 9, "dcgan", 1e9, status="diverged"))
    board = leaderboard(load_records(tmp_path), "fd_unet", ["gan.name"])
    # lower FD is better: wgan_gp first; the diverged run is excluded from the mean
    assert list(board["gan.name"]) == ["wgan_gp", "dcgan"]
    assert board["mean"].tolist() == pytest.approx([7.0, 12.0])
    assert board["std"].tolist() == pytest.approx([np.std([5, 7, 9], ddof=1), np.std([10, 12, 14], ddof=1)])
    assert board["n_seeds"].tolist() == [3, 3]
    # higher Dice is better: the order flips
    dice = leaderboard(load_records(tmp_path), "dice_unet@synthetic", ["gan.name"])
    assert list(dice["gan.name"]) == ["dcgan", "wgan_gp"]
    md = to_markdown(board)
    assert "lower is better" in md and "7 ± 2" in md and "unet_encoder" in md


def test_leaderboard_errors_and_files(tmp_path):
    append_record(tmp_path, _record("a", 0, "dcgan", 1.0))
    with pytest.raises(KeyError, match="available"):
        leaderboard(load_records(tmp_path), "fid_inception", ["gan.name"])
    with pytest.raises(KeyError, match="not_a_key"):
        leaderboard(load_records(tmp_path), "fd_unet", ["not_a_key"])
    board, text, path = write_leaderboard(tmp_path, tmp_path / "lb", "fd_unet", ["gan.name", "data.train_size"])
    assert path.read_text() == text
    assert path.with_suffix(".csv").read_text().splitlines()[0].startswith("rank,gan.name,data.train_size")


def test_flatten_config_and_table():
    flat = flatten_config({"a": {"b": 1, "c": [1, 2]}, "d": None})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": None}
    table = metric_table([_record("r", 0, "dcgan", 3.0)])
    assert set(table["metric"]) == {"fd_unet", "dice_unet@synthetic"}
    assert json.loads(table["cfg.seed"].astype(str).iloc[0]) == 0
