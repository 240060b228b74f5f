"""A compacted columnar index of the results store, refreshed incrementally from the record files.

Writers are unchanged: one JSON file per record (``records/<training id>--<evaluation id>.json``, atomic
``os.replace``). Readers keep ``<store>/index/`` up to date and read it instead of parsing every record:

- ``runs-<part>.parquet``: one row per record file: the run-level columns of :data:`benchmark.store.RUN_COLUMNS` and
  the ``cfg.*`` config keys, ``_file``, ``_keys`` (a hash of the record's config key order; the orders themselves are
  in the part's schema metadata, so the table's column order is the one ``metric_table`` gives).
- ``metrics-<part>.parquet``: one row per (record file, metric or downstream score), in the record's order
  (``_pos``), sorted by ``metric`` so that reading a few metrics reads only their row groups.
- ``manifest-<part>.parquet``: the part's files (name, mtime_ns, size, inode). A refresh appends a part (runs,
  metrics, manifest) for the new and changed files; it never rewrites older parts.
- ``state.json``: the parts (rows each), the dead files of each part (replaced by a newer part, or gone) and the
  records folder's mtime at the last full listing. A file whose (mtime_ns, size, inode) changed (a re-evaluation
  replaced it: ``os.replace`` gives a new inode) is parsed again into a new part; its rows in the older part are dead
  and skipped on read; more than ``MAX_PARTS`` parts or a quarter dead rows and the index is compacted into one part.
  While the records folder's mtime equals the remembered one, a read or refresh opens ``state.json`` and nothing
  else of the listing (no manifest, no stat of the record files).

Values: ``value`` float64, ``higher_is_better`` and ``collapsed`` booleans (``collapsed`` as the leaderboard reads
it: ``v is True or v == 1``), everything else as the leaderboard's canonical text (``_norm``: None/NaN -> null,
64.0 -> "64", True -> "true"; lists and dicts by ``str``), so every comparison, filter and grouping the leaderboard
makes gives what it gives on ``metric_table(load_records(...))``. ``cfg.*`` columns come back as pandas categoricals.

Concurrency: a refresh runs under ``file_lock(<store>/index)``; parts are written under new names and ``state.json``
is replaced atomically last, so a reader sees the previous complete index or the new one, never half of one. A reader
that cannot take the lock in ``lock_timeout`` seconds (or cannot write the store) reads the last complete index and
parses the new and changed files itself, in memory.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medsynbench.benchmark.leaderboard import _norm

try:  # 4-5x faster than json on the records; same values (both give Python dicts, lists, str, int, float)
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads
from medsynbench.benchmark.store import RUN_COLUMNS, metric_entries, run_fields
from medsynbench.io import atomic_write, file_lock

INDEX_VERSION = 2
MAX_PARTS = 8
DEAD_FRACTION = 0.25
_BOOL = ("higher_is_better", "collapsed")


def index_dir(store_dir: str | Path) -> Path:
    return Path(store_dir) / "index"


def _text(v):
    """Canonical text of a value (the leaderboard's ``_norm``), None for None/NaN (fast paths for JSON types)."""
    t = type(v)
    if t is str:
        return v
    if v is None:
        return None
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        return None if v != v else str(int(v)) if v.is_integer() else str(v)
    if isinstance(v, float) and math.isnan(v):
        return None
    return _norm(v)


def _float(v):
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------- parsing records
def _scan(folder: Path) -> dict[str, tuple[int, int, int]]:
    """``{file name: (mtime_ns, size, inode)}`` of the complete records (hidden temporaries never match)."""
    out = {}
    try:
        it = os.scandir(folder)
    except FileNotFoundError:
        return out
    with it:
        for e in it:
            if e.name.endswith(".json") and not e.name.startswith("."):
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                out[e.name] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


def _rows(rec: dict, name: str):
    """(run row, config key order, metric rows) of one record, with metric_table's semantics."""
    rec.setdefault("record_id", name[:-len(".json")])
    base, cfg = run_fields(rec)
    run = {"_file": name}
    for k, v in {**base, **cfg}.items():
        if k == "collapsed":
            run[k] = None if v is None else bool(v is True or v == 1)
        else:
            run[k] = _text(v)
    entries = metric_entries(rec)
    metric_rows = []
    skip = {*base, *cfg, "_file", "_pos"}
    for pos, m in enumerate(entries):
        row = {"_file": name, "_pos": pos}
        for k, v in m.items():
            if k in skip:
                continue
            if k == "value":
                row[k] = _float(v)
            elif k in _BOOL:
                row[k] = None if v is None else bool(v)
            else:
                row[k] = _text(v)
        metric_rows.append(row)
    if not entries:
        metric_rows.append({"_file": name, "_pos": 0, "metric": None, "value": None})
    return run, list(cfg), metric_rows


def _type(col: str) -> pa.DataType:
    if col == "value":
        return pa.float64()
    if col in _BOOL:
        return pa.bool_()
    if col == "_pos":
        return pa.int32()
    return pa.string()


def _table(rows: list[dict], columns: list[str], metadata: dict | None = None) -> pa.Table:
    """Columns typed by name; ``cfg.*`` dictionary-encoded (few distinct values; read back as categoricals)."""
    t = pa.Table.from_pylist(rows, schema=pa.schema([(c, _type(c)) for c in columns]))
    arrays = [t[c].combine_chunks().dictionary_encode() if c.startswith("cfg.") else t[c] for c in columns]
    return pa.Table.from_arrays(arrays, names=columns, metadata=metadata)


def _parse(folder: Path, names: list[str]) -> tuple[pa.Table, pa.Table, dict, dict]:
    """Parse record files into (runs table, metrics table, {hash: config key order}, {file: (record_id, recorded_at)}).
    Files that vanished since the scan are left out (the next refresh drops them)."""
    runs, metric_rows, keylists, ids = [], [], {}, {}
    run_cols, metric_cols = {"_file": None, "_keys": None}, {"_file": None, "_pos": None, "metric": None,
                                                              "value": None}
    for name in names:
        path = folder / name
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            continue
        try:
            rec = _loads(text)
        except ValueError as err:
            raise ValueError(f"results store file {path} is not valid JSON: {err}") from err
        run, keys, mrows = _rows(rec, name)
        h = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16]
        keylists.setdefault(h, keys)
        run["_keys"] = h
        runs.append(run)
        run_cols.update(dict.fromkeys(run))
        for r in mrows:
            metric_cols.update(dict.fromkeys(r))
        metric_rows += mrows
        ids[name] = (run["record_id"], run["recorded_at"])
    runs_t = _table(runs, list(run_cols), {"keylists": json.dumps(keylists)})
    metrics_t = _table(metric_rows, list(metric_cols))
    if metrics_t.num_rows:
        metrics_t = metrics_t.sort_by([("metric", "ascending"), ("_file", "ascending"), ("_pos", "ascending")])
    return runs_t, metrics_t, keylists, ids


# ------------------------------------------------------------------------------------------------ index on disk
def _write_parquet(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda fh: pq.write_table(table, fh, row_group_size=64 * 1024, compression="zstd"))


def _empty_state() -> dict:
    return {"index_version": INDEX_VERSION, "records_mtime_ns": -1, "parts": {}, "dead": {}}


def _read_state(folder: Path) -> dict:
    """``state.json``: the parts (rows each), the dead files of each part and the records folder's mtime when it
    was last listed in full. Written last by a refresh, atomically: the index's commit point."""
    try:
        state = json.loads((folder / "state.json").read_bytes())
    except (FileNotFoundError, ValueError):
        return _empty_state()
    return state if state.get("index_version") == INDEX_VERSION else _empty_state()  # another layout: rebuild


def _write_state(folder: Path, state: dict) -> None:
    text = json.dumps(state, separators=(",", ":")).encode()
    atomic_write(folder / "state.json", lambda fh: fh.write(text))


def _part_files(folder: Path, part: str) -> tuple[Path, Path, Path]:
    return folder / f"runs-{part}.parquet", folder / f"metrics-{part}.parquet", folder / f"manifest-{part}.parquet"


def _load_manifest(folder: Path, state: dict) -> dict[str, tuple[int, int, int, str]]:
    """``{file: (mtime_ns, size, inode, part)}`` of the live files (the parts' manifests less their dead files)."""
    known = {}
    for part in state["parts"]:
        t = pq.read_table(_part_files(folder, part)[2])
        dead = set(state["dead"].get(part, ()))
        for f, m, s, i in zip(*(t[c].to_pylist() for c in ("file", "mtime_ns", "size", "inode"))):
            if f not in dead:
                known[f] = (m, s, i, part)
    return known


def _dir_mtime(folder: Path) -> int:
    try:
        return os.stat(folder).st_mtime_ns
    except FileNotFoundError:
        return -1


def _changes(store: Path, folder: Path, state: dict):
    """None if nothing changed, else (new or changed files, files gone, scan, known files, records folder mtime to
    remember).

    Every writer adds or replaces a record by ``os.replace`` into ``records/``, which updates the folder's mtime: if
    it equals the mtime of the last full listing, nothing changed and neither a file nor the manifest is read. The
    mtime is remembered only when it is more than 2 s older than the listing (coarse file-system timestamps cannot
    tell apart two changes within one tick)."""
    records = store / "records"
    before = _dir_mtime(records)
    if before != -1 and before == state["records_mtime_ns"]:
        return None
    import time
    scan = _scan(records)
    known = _load_manifest(folder, state)
    changed = sorted(n for n, key in scan.items() if known.get(n, ())[:3] != key)
    gone = set(known) - set(scan)
    trusted = before if before != -1 and time.time_ns() - before > 2_000_000_000 else -1
    return changed, gone, scan, known, trusted


def refresh_index(store_dir: str | Path, lock_timeout: float = -1, compact: bool | None = None) -> dict:
    """Bring ``<store>/index`` up to date with ``<store>/records`` (under the index lock); returns what it did:
    ``{"parsed": n, "removed": n, "parts": n, "compacted": bool}``."""
    return _refresh(Path(store_dir), lock_timeout, compact)[0]


def _refresh(store: Path, lock_timeout: float, compact: bool | None) -> tuple[dict, dict]:
    """``refresh_index``, also returning the state it left (covering every record file it listed)."""
    folder = index_dir(store)
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder, timeout=lock_timeout):
        return _refresh_locked(store, folder, compact)


def _refresh_locked(store: Path, folder: Path, compact: bool | None) -> tuple[dict, dict]:
    state = _read_state(folder)
    ch = _changes(store, folder, state)
    if ch is None and not compact:  # the records folder is as it was at the last full listing
        return {"parsed": 0, "removed": 0, "compacted": False, "parts": len(state["parts"])}, state
    out = {"parsed": 0, "removed": 0, "compacted": False}
    if ch is not None:
        changed, gone, scan, known, records_mtime = ch
        out.update(parsed=len(changed), removed=len(gone))
        if changed or gone or records_mtime != state["records_mtime_ns"]:
            for f in set(changed) | gone:  # their rows in older parts are dead
                if f in known:
                    state["dead"].setdefault(known[f][3], []).append(f)
            if changed:
                part = uuid.uuid4().hex[:12]
                runs_t, metrics_t, _, _ = _parse(store / "records", changed)
                files = runs_t["_file"].to_pylist()
                manifest = pa.table({"file": pa.array(files, pa.string()),
                                     **{c: pa.array([scan[f][k] for f in files], pa.int64())
                                        for k, c in enumerate(("mtime_ns", "size", "inode"))}})
                runs_path, metrics_path, manifest_path = _part_files(folder, part)
                _write_parquet(runs_path, runs_t)
                _write_parquet(metrics_path, metrics_t)
                _write_parquet(manifest_path, manifest)
                state["parts"][part] = runs_t.num_rows
            state["parts"] = {p: n for p, n in state["parts"].items() if n > len(state["dead"].get(p, ()))}
            state["dead"] = {p: d for p, d in state["dead"].items() if p in state["parts"] and d}
            state["records_mtime_ns"] = records_mtime
            _write_state(folder, state)
    total = sum(state["parts"].values())
    dead = sum(len(d) for d in state["dead"].values()) / total if total else 0.0
    if compact or (compact is None and (len(state["parts"]) > MAX_PARTS or dead > DEAD_FRACTION)):
        state = _compact(folder, state)
        out["compacted"] = True
    _remove_unlisted(folder, set(state["parts"]))
    out["parts"] = len(state["parts"])
    return out, state


def _compact(folder: Path, state: dict) -> dict:
    """Rewrite the live rows of all parts as one part; the state points at it (old parts are removed after)."""
    runs_t, metrics_t, keylists = _read_live(folder, state, {}, None)
    mans = []
    for p in state["parts"]:
        t = pq.read_table(_part_files(folder, p)[2])
        dead = state["dead"].get(p)
        mans.append(t.filter(pc.invert(pc.is_in(t["file"], value_set=pa.array(dead, pa.string())))) if dead else t)
    part = uuid.uuid4().hex[:12]
    runs_t = runs_t.replace_schema_metadata({"keylists": json.dumps(keylists)})
    if metrics_t.num_rows:
        metrics_t = metrics_t.sort_by([("metric", "ascending"), ("_file", "ascending"), ("_pos", "ascending")])
    runs_path, metrics_path, manifest_path = _part_files(folder, part)
    _write_parquet(runs_path, runs_t)
    _write_parquet(metrics_path, metrics_t)
    _write_parquet(manifest_path, pa.concat_tables(mans) if mans else
                   pa.table({"file": pa.array([], pa.string()), "mtime_ns": pa.array([], pa.int64()),
                             "size": pa.array([], pa.int64()), "inode": pa.array([], pa.int64())}))
    state = {**state, "parts": {part: runs_t.num_rows}, "dead": {}}
    _write_state(folder, state)
    return state


def _remove_unlisted(folder: Path, parts: set[str]) -> None:
    """Delete parts the state no longer lists (only under the lock; a reader that loses one retries), and the
    single manifest of the previous layout."""
    for path in folder.glob("*-*.parquet"):
        if path.stem.split("-", 1)[1] not in parts:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    with contextlib.suppress(FileNotFoundError):
        (folder / "manifest.parquet").unlink()


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    tables = [t for t in tables if t is not None]
    if not tables:
        return None
    if len(tables) == 1:
        return tables[0].replace_schema_metadata(None)
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="default")


def _without(t: pa.Table, dead) -> pa.Table:
    if not dead:
        return t
    return t.filter(pc.invert(pc.is_in(t["_file"], value_set=pa.array(sorted(dead), type=pa.string()))))


def _read_metrics(path: Path, metrics: list[str] | None) -> pa.Table:
    """A metrics part, only the row groups whose ``metric`` range can hold one of ``metrics`` (the part is sorted
    by metric), then only those metrics' rows."""
    pf = pq.ParquetFile(path)
    if metrics is None:
        return pf.read()
    col = pf.schema_arrow.get_field_index("metric")
    groups = []
    for i in range(pf.metadata.num_row_groups):
        st = pf.metadata.row_group(i).column(col).statistics
        if st is None or not st.has_min_max or any(st.min <= m <= st.max for m in metrics):
            groups.append(i)
    t = pf.read_row_groups(groups) if groups else pf.schema_arrow.empty_table()
    return t.filter(pc.is_in(t["metric"], value_set=pa.array(list(metrics), type=pa.string())))


def _live(t: pa.Table, dead) -> np.ndarray:
    """Boolean mask of the rows of ``t`` whose file is not in ``dead``."""
    if not dead:
        return np.ones(t.num_rows, dtype=bool)
    return ~pc.is_in(t["_file"], value_set=pa.array(sorted(dead), type=pa.string())).to_numpy(zero_copy_only=False)


def _read_live(folder: Path, state: dict, extra_dead: dict, metrics: list[str] | None, masks: bool = False):
    """Live rows of the index's parts: less each part's dead files and ``extra_dead`` (``{part: files}``).
    ``masks``: return every row and, after the keylists, boolean masks of the live runs and metric rows instead
    (dropping dead rows copies every column)."""
    runs, mets, keylists, run_live, met_live = [], [], {}, [], []
    for part in sorted(state["parts"]):
        dead = set(state["dead"].get(part, ())) | set(extra_dead.get(part, ()))
        runs_path, metrics_path, _ = _part_files(folder, part)
        pf = pq.ParquetFile(runs_path, read_dictionary=[c for c in pq.read_schema(runs_path).names
                                                         if c.startswith("cfg.")])
        rt = pf.read()
        keylists.update(json.loads((rt.schema.metadata or {}).get(b"keylists", b"{}")))
        mt = _read_metrics(metrics_path, metrics)
        if masks:
            runs.append(rt)
            mets.append(mt)
            run_live.append(_live(rt, dead))
            met_live.append(_live(mt, dead))
        else:
            runs.append(_without(rt, dead))
            mets.append(_without(mt, dead))
    empty_runs = _table([], ["_file", "_keys"])
    empty_metrics = _table([], ["_file", "_pos", "metric", "value"])
    out = _concat(runs) or empty_runs, _concat(mets) or empty_metrics, keylists
    if masks:
        return (*out, np.concatenate(run_live or [np.zeros(0, bool)]), np.concatenate(met_live or [np.zeros(0, bool)]))
    return out


# ---------------------------------------------------------------------------------------------------- reading
def _snapshot(store: Path, metrics: list[str] | None, fresh: dict | None = None):
    """The last complete index plus, parsed in memory, the files it does not cover yet (new or changed); files
    gone are left out. ``fresh``: the state a refresh has just left (its listing is the snapshot: no second scan).
    Retries when a concurrent compaction removed a part between reading the state and a part."""
    folder = index_dir(store)
    for attempt in range(5):
        state = fresh if fresh is not None and attempt == 0 else _read_state(folder)
        changed, extra_dead = ([], {}) if fresh is not None and attempt == 0 else _uncovered(store, folder, state)
        try:
            runs_t, metrics_t, keylists, run_live, met_live = _read_live(folder, state, extra_dead, metrics, True)
        except FileNotFoundError:
            if attempt == 4:
                raise
            continue
        if changed:
            r2, m2, k2, _ = _parse(store / "records", changed)
            if metrics is not None and m2.num_rows:
                m2 = m2.filter(pc.is_in(m2["metric"], value_set=pa.array(list(metrics), type=pa.string())))
            runs_t, metrics_t = _concat([runs_t, r2]), _concat([metrics_t, m2])
            run_live = np.concatenate([run_live, np.ones(r2.num_rows, dtype=bool)])
            met_live = np.concatenate([met_live, np.ones(m2.num_rows, dtype=bool)])
            keylists.update(k2)
        return runs_t, metrics_t, keylists, run_live, met_live
    raise RuntimeError("unreachable")


def _order_rows(runs: pa.Table, live: np.ndarray | None = None) -> np.ndarray:
    """``_order_rows`` of the ``live`` rows only (row numbers of ``runs``)."""
    if live is None or live.all():
        return _order_all(runs)
    rows = np.nonzero(live)[0]
    cols = [c for c in ("_file", "record_id", "recorded_at") if c in runs.column_names]
    return rows[_order_all(runs.select(cols).take(pa.array(rows)))]


def _order_all(runs: pa.Table) -> np.ndarray:
    """Row numbers of ``runs`` (one row per record file) of the records kept, in ``load_records`` order: ``_order``
    of its (file, record id, recorded_at), computed by three sorts instead of a Python loop."""
    n = runs.num_rows
    if not n:
        return np.zeros(0, dtype=np.int64)
    def col(c, fill):
        return pc.fill_null(runs[c], fill) if c in runs.column_names else pa.array([fill] * n, pa.string())
    t = pa.table({"r": col("record_id", "\x00"), "a": col("recorded_at", ""), "f": runs["_file"]})
    # the winner of each record id: newest recorded_at, ties to the later file name (last of its sorted run)
    by_time = pc.sort_indices(t, [("r", "ascending"), ("a", "ascending"), ("f", "ascending")]).to_numpy()
    # its place: the record id's first file name
    by_name = pc.sort_indices(t, [("r", "ascending"), ("f", "ascending")]).to_numpy()
    r = t["r"].take(pa.array(by_name))
    starts = np.concatenate([[True], pc.not_equal(r.slice(1), r.slice(0, n - 1)).to_numpy(zero_copy_only=False)])
    ends = np.concatenate([starts[1:], [True]])
    winners, firsts = by_time[ends], by_name[starts]  # both sorts group the record ids in the same order
    w = pa.table({"a": t["a"].take(pa.array(winners)), "m": t["f"].take(pa.array(firsts))})
    return winners[pc.sort_indices(w, [("a", "ascending"), ("m", "ascending")]).to_numpy()]


def _order(ids: dict) -> list[str]:
    """Files of the records kept, in ``load_records`` order: one per record id (newest ``recorded_at`` wins, ties
    to the later file name; its place is the record id's first file), sorted by ``recorded_at`` (stable)."""
    newest: dict[str, str] = {}
    for name in sorted(ids):
        rid, at = ids[name]
        if rid not in newest or str(at or "") >= str(ids[newest[rid]][1] or ""):
            newest[rid] = name
    return sorted(newest.values(), key=lambda n: str(ids[n][1] or ""))


def metric_table_from_store(store_dir: str | Path, metrics: list[str] | str | None = None, refresh: bool = True,
                            lock_timeout: float = 10.0) -> pd.DataFrame:
    """``metric_table(load_records(store_dir))`` from the index: one row per (record, metric), restricted to
    ``metrics`` (None: all). ``refresh``: bring the index up to date first (under its lock; if the lock is not free in
    ``lock_timeout`` s or the store is read-only, new files are parsed in memory instead).

    Values are the leaderboard's canonical text except ``value`` (float), ``higher_is_better`` and ``collapsed``
    (booleans); ``cfg.*`` columns are categoricals. ``attrs["available_metrics"]``: every metric in the store."""
    store = Path(store_dir)
    if isinstance(metrics, str):
        metrics = [metrics]
    fresh = None
    if refresh:
        with contextlib.suppress(TimeoutError, PermissionError, OSError):
            fresh = _refresh(store, lock_timeout, None)[1]
    runs_t, metrics_t, keylists, run_live, met_live = _snapshot(store, metrics, fresh)
    run_rows = _order_rows(runs_t, run_live)  # runs_t's live rows of the records kept, in record order
    order_pos = np.full(runs_t.num_rows, -1, dtype=np.int64)
    order_pos[run_rows] = np.arange(len(run_rows))
    # metric rows of kept records, by (record order, position in the record); a file's live run row is unique
    live_rows = np.nonzero(run_live)[0]
    live_files = runs_t["_file"] if len(live_rows) == runs_t.num_rows else runs_t["_file"].take(pa.array(live_rows))
    run_of = pc.index_in(metrics_t["_file"], value_set=live_files).to_numpy(zero_copy_only=False)
    run_of = np.where(np.isnan(run_of), -1, run_of).astype(np.int64) if run_of.dtype.kind == "f" else \
        run_of.astype(np.int64)
    rank = np.where((run_of >= 0) & met_live, order_pos[live_rows[np.maximum(run_of, 0)]] if len(live_rows)
                    else -1, -1)
    mpos = metrics_t["_pos"].to_numpy(zero_copy_only=False).astype(np.int64)
    sel = np.nonzero(rank >= 0)[0]
    sel = sel[np.lexsort((mpos[sel], rank[sel]))]
    if not np.array_equal(sel, np.arange(metrics_t.num_rows)):
        metrics_t = metrics_t.take(pa.array(sel))
    run_take = run_rows
    # column order: metric fields, run columns, cfg.* in metric_table's order (first appearance by record order)
    cfg_cols: dict[str, None] = {}
    seen = set()
    for h in pc.unique(runs_t["_keys"].take(pa.array(run_take))).to_pylist():  # first appearance, record order
        if h not in seen:
            seen.add(h)
            cfg_cols.update(dict.fromkeys(keylists.get(h, [])))
    joined_rows = run_take[rank[sel]]  # the run row of each metric row
    joined = runs_t if np.array_equal(joined_rows, np.arange(runs_t.num_rows)) else \
        runs_t.take(pa.array(joined_rows))
    metric_fields = [c for c in metrics_t.column_names if c not in ("_file", "_pos")]
    columns = {}
    for c in metric_fields:
        columns[c] = metrics_t[c]
    for c in RUN_COLUMNS:
        columns[c] = joined[c] if c in joined.column_names else pa.nulls(len(joined), _type(c))
    for c in cfg_cols:
        col = joined[c] if c in joined.column_names else pa.nulls(len(joined), pa.string())
        columns[c] = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)
    return pa.table(columns).to_pandas() if columns else pd.DataFrame()


def _uncovered(store: Path, folder: Path, state: dict) -> tuple[list, dict]:
    """(record files the index does not cover yet, {part: files whose indexed rows are stale}) without refreshing."""
    ch = _changes(store, folder, state)
    changed, extra_dead = [], {}
    if ch is not None:
        changed, gone, _, known, _ = ch
        for f in set(changed) | gone:
            if f in known:
                extra_dead.setdefault(known[f][3], set()).add(f)
    return changed, extra_dead


def available_metrics(store_dir: str | Path) -> list[str]:
    """Every metric name in the store (the index's ``metric`` column plus files it does not cover yet)."""
    store = Path(store_dir)
    folder = index_dir(store)
    state = _read_state(folder)
    changed, extra_dead = _uncovered(store, folder, state)
    names: set = set()
    for part in state["parts"]:
        dead = set(state["dead"].get(part, ())) | extra_dead.get(part, set())
        mt = _without(pq.read_table(_part_files(folder, part)[1], columns=["_file", "metric"]), dead)
        names.update(mt["metric"].unique().to_pylist())
    if changed:
        names.update(_parse(store / "records", changed)[1]["metric"].unique().to_pylist())
    return sorted(n for n in names if n is not None)
