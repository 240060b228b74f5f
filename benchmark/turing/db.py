"""The study database: one SQLite file in WAL mode (``<study>/study.sqlite``).

Tables: ``meta`` (settings, the admin token's hash), ``images`` (opaque id, ground truth, source, class), ``raters``
(name, token hash, finished), ``answers`` (one row per rater and image: the last answer wins). Tokens are random
(``secrets.token_urlsafe``, 192 bits) and stored only as SHA-256 hashes; a presented token is hashed and compared with
:func:`hmac.compare_digest` against every stored hash, without early exit. Every connection is short-lived (one per
request), write transactions are ``BEGIN IMMEDIATE`` and wait up to ``BUSY_TIMEOUT_S`` for the writer lock.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from pathlib import Path

import numpy as np

DB_NAME = "study.sqlite"
BUSY_TIMEOUT_S = 30.0
ID_PATTERN = r"^[0-9a-f]{32}$"  # image ids: secrets.token_hex(16)
ANSWERS = ("real", "synthetic")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY, position INTEGER NOT NULL UNIQUE, truth TEXT NOT NULL CHECK (truth IN ('real','synthetic')),
    source TEXT NOT NULL, label TEXT, origin TEXT);
CREATE TABLE IF NOT EXISTS raters (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
    finished_at REAL);
CREATE TABLE IF NOT EXISTS answers (
    rater_id INTEGER NOT NULL REFERENCES raters(id), image_id TEXT NOT NULL REFERENCES images(id),
    answer TEXT NOT NULL CHECK (answer IN ('real','synthetic')), confidence INTEGER, comment TEXT,
    elapsed_ms INTEGER, answered_at REAL NOT NULL, revisions INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (rater_id, image_id));
"""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


def connect(study_dir: str | Path) -> sqlite3.Connection:
    path = Path(study_dir) / DB_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {study_dir} is not a Turing-test study "
                                "(create one with `medsynbench turing create`)")
    return _open(path)


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection):
    """A write transaction that takes the writer lock up front (no lock upgrade, so no SQLITE_BUSY mid-way)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_db(study_dir: Path, settings: dict, images: list[dict]) -> str:
    """Write a new study database; returns the admin token (stored hashed only, shown once)."""
    path = Path(study_dir) / DB_NAME
    conn = _open(path)
    try:
        conn.executescript(SCHEMA)
        admin = new_token()
        with transaction(conn):
            conn.execute("INSERT INTO meta VALUES ('settings', ?)", (json.dumps(settings, sort_keys=True),))
            conn.execute("INSERT INTO meta VALUES ('admin_token_hash', ?)", (hash_token(admin),))
            conn.executemany("INSERT INTO images (id, position, truth, source, label, origin) VALUES "
                             "(:id, :position, :truth, :source, :label, :origin)", images)
        return admin
    finally:
        conn.close()


def settings(conn: sqlite3.Connection) -> dict:
    return json.loads(conn.execute("SELECT value FROM meta WHERE key='settings'").fetchone()[0])


def add_rater(conn: sqlite3.Connection, name: str) -> str:
    """A new rater; returns the token of their link (stored hashed only)."""
    name = str(name).strip()
    if not name or len(name) > 100:
        raise ValueError(f"rater name must be 1-100 characters, got {name!r}")
    token = new_token()
    with transaction(conn):
        if conn.execute("SELECT 1 FROM raters WHERE name=?", (name,)).fetchone():
            raise ValueError(f"a rater named {name!r} already exists in this study")
        conn.execute("INSERT INTO raters (name, token_hash, created_at) VALUES (?, ?, ?)",
                     (name, hash_token(token), time.time()))
    return token


def _matches(token: str | None, stored: str) -> bool:
    usable = bool(token) and len(token) <= 256  # an empty or oversized token is compared too, then refused
    equal = hmac.compare_digest(hash_token(token if usable else ""), stored)
    return usable and equal


def rater_for_token(conn: sqlite3.Connection, token: str | None) -> sqlite3.Row | None:
    """The rater whose token this is, or None; every stored hash is compared (constant time, no early exit)."""
    found = None
    for row in conn.execute("SELECT id, name, token_hash, finished_at FROM raters").fetchall():
        if _matches(token, row["token_hash"]):
            found = row
    return found


def is_admin(conn: sqlite3.Connection, token: str | None) -> bool:
    row = conn.execute("SELECT value FROM meta WHERE key='admin_token_hash'").fetchone()
    return row is not None and _matches(token, row[0])


def rater_order(conn: sqlite3.Connection, rater_id: int) -> list[str]:
    """The image ids in the order this rater sees them: a permutation seeded by the study seed and the rater id."""
    ids = [r[0] for r in conn.execute("SELECT id FROM images ORDER BY position")]
    seed = int(settings(conn).get("seed", 0))
    perm = np.random.default_rng([seed, 7919, int(rater_id)]).permutation(len(ids))
    return [ids[i] for i in perm]


def rater_answers(conn: sqlite3.Connection, rater_id: int) -> dict[str, dict]:
    rows = conn.execute("SELECT image_id, answer, confidence, comment FROM answers WHERE rater_id=?", (rater_id,))
    return {r["image_id"]: {"answer": r["answer"], "confidence": r["confidence"], "comment": r["comment"]}
            for r in rows}


def save_answer(conn: sqlite3.Connection, rater_id: int, image_id: str, answer: str, confidence: int | None,
                comment: str | None, elapsed_ms: int | None) -> None:
    """Insert or replace (the last answer wins; ``revisions`` counts the submissions)."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO answers (rater_id, image_id, answer, confidence, comment, elapsed_ms, answered_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rater_id, image_id) DO UPDATE SET answer=excluded.answer, "
            "confidence=excluded.confidence, comment=excluded.comment, elapsed_ms=excluded.elapsed_ms, "
            "answered_at=excluded.answered_at, revisions=answers.revisions + 1",
            (rater_id, image_id, answer, confidence, comment, elapsed_ms, time.time()))


def complete_count(conn: sqlite3.Connection, rater_id: int, require_confidence: bool) -> int:
    cond = " AND confidence IS NOT NULL" if require_confidence else ""
    return conn.execute(f"SELECT COUNT(*) FROM answers WHERE rater_id=?{cond}", (rater_id,)).fetchone()[0]


def progress(conn: sqlite3.Connection) -> list[dict]:
    """Per rater: answered / total, finished, last activity (what the admin sees; no answers, no ground truth)."""
    total = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    rows = conn.execute(
        "SELECT r.id, r.name, r.created_at, r.finished_at, COUNT(a.image_id) AS answered, MAX(a.answered_at) AS last "
        "FROM raters r LEFT JOIN answers a ON a.rater_id = r.id GROUP BY r.id ORDER BY r.id").fetchall()
    return [{"rater": r["name"], "answered": r["answered"], "total": total, "finished": r["finished_at"] is not None,
             "last_answer_at": r["last"]} for r in rows]
