"""The store's columnar index (benchmark/store_index.py) gives exactly the leaderboards of the record files."""
from __future__ import annotations

import json
import multiprocessing as mp
import os

import pandas as pd

from medsynbench.benchmark.leaderboard import leaderboard, write_leaderboard
from medsynbench.benchmark.store import load_records
from medsynbench.benchmark.store_index import index_dir, metric_table_from_store, refresh_index
from tests.test_leaderboard import WARN, make

BOARDS = [dict(metric="fd_unet"), dict(metric=["kid_unet", "fd_unet"]), dict(metric="dice_unet@synthetic"),
          dict(metric="fd_unet", group_by=["gan.name"]), dict(metric="fd_unet", where={"data.image_size": 64}),
          dict(metric="fd_unet", include_failed=True)]


def _records():
    recs = []
    for i in range(24):
        extra = {"train.lr": [1e-4, 2e-4][i % 2]} if i % 5 else {}  # a key some records lack
        recs.append(make(i % 4, 100.0 + i, gan=["dcgan", "wgan_gp", "lsgan"][i % 3], size=[64, 32][(i // 12)],
                         kid=0.1 + i / 100, dice=0.5 + i / 100 if i % 3 else None,
                         warning=WARN if i % 2 else None, collapsed=i == 5, status="failed" if i == 7 else "completed",
                         evaluation=f"e{i % 2}", recorded_at=f"2026-01-{1 + i % 9:02d}T00:00:00",
                         evaluate_step=None if i % 4 else 300, evaluated_step=600, **extra))
    for r in recs:
        r["evaluated_step"] = r["config"].pop("evaluated_step")
    return recs


def _write(store, rec, name=None):
    folder = store / "records"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{rec['record_id']}.json")
    tmp = folder / f".{path.name}.x.tmp"
    tmp.write_text(json.dumps(rec, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _same_boards(store):
    old = load_records(store)
    table = metric_table_from_store(store)
    for spec in BOARDS:
        a = leaderboard(old, **spec)
        b = leaderboard(table, **spec)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert a.attrs == b.attrs


def test_index_gives_the_leaderboards_of_the_records(tmp_path):
    store = tmp_path / "store"
    for rec in _records():
        _write(store, rec)
    _same_boards(store)
    assert refresh_index(store)["parsed"] == 0  # the read above brought the index up to date


def _indexed_then_new(store, recs, n_indexed: int) -> None:
    """The first ``n_indexed`` records written and indexed, the rest written after the index (new files)."""
    for rec in recs[:n_indexed]:
        _write(store, rec)
    refresh_index(store)
    for rec in recs[n_indexed:]:
        _write(store, rec)


def test_refresh_picks_up_new_replaced_and_deleted_files(tmp_path):
    store, recs = tmp_path / "store", _records()
    _indexed_then_new(store, recs, 16)
    again = dict(recs[0], recorded_at="2026-02-01T00:00:00")  # re-evaluation: same file, same size, new numbers
    again["metrics"] = [dict(m, value=m["value"] + 1) for m in again["metrics"]]
    _write(store, again)
    (store / "records" / f"{recs[3]['record_id']}.json").unlink()  # deleted
    # legacy: a second file of one record id, older: the newest recorded_at wins
    _write(store, dict(recs[1], recorded_at="1999-01-01T00:00:00", metrics=[]), name="zz-old-copy.json")
    (store / "records" / ".half.json.abc.tmp").write_text('{"run_id": "half')  # a writer killed mid-write
    out = refresh_index(store)
    assert out["parsed"] == 8 + 1 + 1 and out["removed"] == 1
    _same_boards(store)
    table = metric_table_from_store(store, ["fd_unet"])
    assert set(table["metric"]) == {"fd_unet"} and recs[3]["record_id"] not in set(table["record_id"])
    assert float(table.loc[table["record_id"] == recs[0]["record_id"], "value"].iloc[0]) == 101.0
    out = refresh_index(store, compact=True)
    assert out["compacted"] and out["parts"] == 1
    parts = sorted(p.name.split("-")[0].split(".")[0] for p in index_dir(store).glob("*.parquet"))
    assert parts == ["manifest", "metrics", "runs"]
    _same_boards(store)


def test_reader_without_the_lock_parses_new_files_itself(tmp_path):
    store, recs = tmp_path / "store", _records()
    _indexed_then_new(store, recs, 12)
    from medsynbench.io import file_lock
    with file_lock(index_dir(store)):  # another process refreshes: this reader does not wait
        table = metric_table_from_store(store, lock_timeout=0.1)
    assert len(set(table["record_id"])) == len({r["record_id"] for r in recs})
    pd.testing.assert_frame_equal(leaderboard(load_records(store), "fd_unet"), leaderboard(table, "fd_unet"))


def _refresher(store):
    refresh_index(store)


def test_concurrent_refresh_leaves_a_consistent_index(tmp_path):
    store = tmp_path / "store"
    for rec in _records():
        _write(store, rec)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_refresher, args=(str(store),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert refresh_index(store)["parsed"] == 0
    _same_boards(store)


def test_write_leaderboard_reads_the_index(tmp_path):
    store = tmp_path / "store"
    for rec in _records():
        _write(store, rec)
    board, text, path = write_leaderboard(store, tmp_path / "boards", "fd_unet")
    pd.testing.assert_frame_equal(board, leaderboard(load_records(store), "fd_unet"))
    assert (index_dir(store) / "state.json").is_file() and path.is_file()
    try:
        write_leaderboard(store, tmp_path / "boards", "nope")
    except KeyError as err:
        assert "kid_unet" in str(err) and "nope" in str(err)
    else:
        raise AssertionError("unknown metric accepted")


def test_vectorised_record_order_matches_load_records_order():
    import random

    import pyarrow as pa

    from medsynbench.benchmark.store_index import _order, _order_rows
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 30)
        files = rng.sample([f"f{i:03d}.json" for i in range(100)], n)
        rids = [rng.choice(["a", "b", "c", None, "d"]) for _ in range(n)]
        ats = [rng.choice(["2026-01", "2026-02", None, ""]) for _ in range(n)]
        table = pa.table({"_file": files, "record_id": pa.array(rids, pa.string()),
                          "recorded_at": pa.array(ats, pa.string())})
        assert [files[i] for i in _order_rows(table)] == _order(dict(zip(files, zip(rids, ats))))


def test_up_to_date_read_lists_nothing_and_refresh_appends_a_part(tmp_path, monkeypatch):
    import medsynbench.benchmark.store_index as si
    store = tmp_path / "store"
    recs = _records()
    for rec in recs[:12]:
        _write(store, rec)
    past = os.stat(store / "records").st_mtime_ns - 10_000_000_000  # older than the file system's tick
    os.utime(store / "records", ns=(past, past))
    refresh_index(store)
    first = {p.name: p.stat().st_mtime_ns for p in index_dir(store).glob("*.parquet")}
    expected = leaderboard(load_records(store), "fd_unet")

    def boom(*a, **k):
        raise AssertionError("listed the records folder although it did not change")
    with monkeypatch.context() as m:
        m.setattr(si, "_scan", boom)
        m.setattr(si, "_load_manifest", boom)
        pd.testing.assert_frame_equal(leaderboard(metric_table_from_store(store, "fd_unet"), "fd_unet"), expected)
    for rec in recs[12:]:
        _write(store, rec)
    assert refresh_index(store)["parts"] == 2
    after = {p.name: p.stat().st_mtime_ns for p in index_dir(store).glob("*.parquet")}
    assert all(after.get(name) == t for name, t in first.items())  # older parts are never rewritten
    _same_boards(store)
