"""Visual Turing test (benchmark/turing): what the served bytes reveal, tokens, traversal, validation, last answer
wins, selection, statistics (Fleiss' kappa against a published value), the CLI. In-process (FastAPI TestClient);
the real server is in test_turing_load.py and test_turing_browser.py."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin
from scipy.stats import binomtest

from medsynbench.benchmark.turing import db
from medsynbench.benchmark.turing.config import register_turing_config
from medsynbench.benchmark.turing.create import Candidate, create_study, select
from medsynbench.benchmark.turing.encode import png_chunks
from medsynbench.benchmark.turing.results import fleiss, write_results
from medsynbench.benchmark.turing.server import create_app
from medsynbench.benchmark.validate import ConfigError
from tests.conftest import REPO, compose_config


def make_folders(root: Path, n_real: int = 12, n_syn: int = 12) -> tuple[Path, Path]:
    """Real images as 48 px colour PNGs with text chunks and EXIF, synthetic ones as 32 px JPEGs in class
    sub-folders: every cue a careless pipeline would pass on."""
    rng = np.random.default_rng(0)
    real, syn = root / "real", root / "synthetic"
    for i in range(n_real):
        cls = ("nevus", "melanoma")[i % 2]
        (real / cls).mkdir(parents=True, exist_ok=True)
        info = PngImagePlugin.PngInfo()
        info.add_text("Source", f"hospital scanner {i}")
        exif = Image.Exif()
        exif[0x010F] = "ScannerMaker"
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(real / cls / f"real_{i}.png",
                                                                                 pnginfo=info, exif=exif)
    for i in range(n_syn):
        cls = ("nevus", "melanoma")[i % 2]
        (syn / cls).mkdir(parents=True, exist_ok=True)
        smooth = np.repeat(np.repeat(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), 8, 0), 8, 1)
        Image.fromarray(smooth).save(syn / cls / f"fake_{i}.jpg", quality=70)
    return real, syn


def turing_cfg(tmp: Path, *overrides: str):
    register_turing_config()
    return compose_config([f"paths.results_dir={tmp / 'results'}", "action=create", *overrides], "turing")


@pytest.fixture
def study(tmp_path):
    real, syn = make_folders(tmp_path)
    cfg = turing_cfg(tmp_path, f"study_dir={tmp_path / 'study'}", f"real_folder={real}", f"synthetic_folder={syn}",
                     "n_images=16", "image_size=32", "raters=[ann,bob]", "show_score=true")
    summary = create_study(cfg)
    client = TestClient(create_app(summary["study_dir"]))
    return Path(summary["study_dir"]), summary, client


def _state(client, token):
    r = client.get(f"/r/{token}/state")
    assert r.status_code == 200
    return r.json()


def test_served_images_carry_no_cue(study):
    study_dir, summary, client = study
    token = summary["rater_tokens"]["ann"]
    items = _state(client, token)["items"]
    conn = db.connect(study_dir)
    truth = {r["id"]: r["truth"] for r in conn.execute("SELECT id, truth FROM images")}
    conn.close()
    assert sorted(truth.values()).count("real") == 8 and len(truth) == 16  # balanced
    seen = {"real": [], "synthetic": []}
    for it in items:
        r = client.get(f"/r/{token}/image/{it['id']}")
        assert r.status_code == 200
        headers = {k: v for k, v in r.headers.items() if k != "date"}
        with Image.open(io.BytesIO(r.content)) as im:
            im.load()
            meta = (im.format, im.mode, im.size, dict(im.info), im.getexif().get(0x010F))
        seen[truth[it["id"]]].append((headers, png_chunks(r.content), meta))
        assert len(it["id"]) == 32 and all(c in "0123456789abcdef" for c in it["id"])  # opaque random id
    for side in ("real", "synthetic"):
        for headers, chunks, meta in seen[side]:
            assert chunks == ["IHDR", "IDAT", "IEND"]  # no tEXt/zTXt/iTXt/eXIf/tIME/gAMA/iCCP chunk
            assert meta == ("PNG", "RGB", (32, 32), {}, None)
            assert headers == seen["real"][0][0]  # every header, content-length included, identical
    lengths = {int(h["content-length"]) for side in seen.values() for h, _, _ in side}
    assert len(lengths) == 1  # size cannot separate real from synthetic
    files = list((study_dir / "images").iterdir())
    assert len({f.stat().st_mtime for f in files}) == 1 and len({f.stat().st_size for f in files}) == 1
    state_text = json.dumps(_state(client, token))
    for leak in ("truth", "synthetic_folder", "real_", "fake_", "origin", "source"):
        assert leak not in state_text


def test_wrong_or_missing_token_is_403(study):
    study_dir, summary, client = study
    rater, admin = summary["rater_tokens"]["ann"], summary["admin_token"]
    image_id = _state(client, rater)["items"][0]["id"]
    for bad in ("x", rater[:-1] + ("A" if rater[-1] != "A" else "B"), "%00", "a" * 5000, admin):
        assert client.get(f"/r/{bad}").status_code == 403
        assert client.get(f"/r/{bad}/state").status_code == 403
        assert client.get(f"/r/{bad}/image/{image_id}").status_code == 403
        assert client.post(f"/r/{bad}/answer", json={"image_id": image_id, "answer": "real"}).status_code == 403
        assert client.post(f"/r/{bad}/answer", content=b"not json").status_code == 403  # token checked first
        assert client.post(f"/r/{bad}/finish").status_code == 403
    for bad in ("x", rater, summary["rater_tokens"]["bob"]):
        assert client.get(f"/admin/{bad}").status_code == 403
        assert client.get(f"/admin/{bad}/progress.json").status_code == 403
        assert client.get(f"/admin/{bad}/results").status_code == 403
    assert client.get("/").status_code == 403
    assert client.get("/r/").status_code in (403, 404)
    assert client.get(f"/admin/{admin}").status_code == 200
    assert client.get(f"/admin/{admin}/progress.json").json()["raters"][0]["rater"] == "ann"


def test_tokens_are_stored_hashed(study):
    study_dir, summary, _ = study
    tokens = [summary["admin_token"], *summary["rater_tokens"].values()]
    raw = b"".join(p.read_bytes() for p in study_dir.iterdir() if p.is_file())
    for tok in tokens:
        assert tok.encode() not in raw  # neither in the database (nor its WAL) nor in study.json
        assert len(tok) >= 32
    conn = db.connect(study_dir)
    stored = {r["name"]: r["token_hash"] for r in conn.execute("SELECT name, token_hash FROM raters")}
    conn.close()
    assert stored == {n: hashlib.sha256(t.encode()).hexdigest() for n, t in summary["rater_tokens"].items()}


def test_image_ids_cannot_traverse(study):
    study_dir, summary, client = study
    token = summary["rater_tokens"]["ann"]
    image_id = _state(client, token)["items"][0]["id"]
    (study_dir / "images" / "secret.png").write_bytes(b"SECRET")
    for bad in ("../study.sqlite", "..%2Fstudy.sqlite", "%2e%2e%2fstudy.json", "..%5Cstudy.sqlite", "secret",
                f"{image_id}.png", image_id.upper(), f"{image_id}%00", "/etc/passwd", "%2Fetc%2Fpasswd",
                "0" * 32):
        r = client.get(f"/r/{token}/image/{bad}")
        assert r.status_code == 404, bad
        assert b"SQLite format" not in r.content and b"SECRET" not in r.content and b"root:" not in r.content


def test_answers_are_validated(study):
    study_dir, summary, client = study
    token = summary["rater_tokens"]["ann"]
    image_id = _state(client, token)["items"][0]["id"]
    url = f"/r/{token}/answer"
    bad_bodies = [{"image_id": image_id, "answer": "fake"}, {"image_id": image_id, "answer": "REAL"},
                  {"image_id": image_id, "answer": "real", "confidence": 0},
                  {"image_id": image_id, "answer": "real", "confidence": 6},  # the study's scale is 1..5
                  {"image_id": image_id, "answer": "real", "confidence": "high"},
                  {"image_id": image_id, "answer": "real", "truth": "real"},  # unknown field
                  {"image_id": image_id, "answer": "real", "comment": "x" * 2001},
                  {"image_id": "../study", "answer": "real"}, {"answer": "real"}, {}, []]
    for body in bad_bodies:
        assert client.post(url, json=body).status_code == 422, body
    assert client.post(url, content=b"{not json").status_code == 422
    assert client.post(url, json={"image_id": "f" * 32, "answer": "real"}).status_code == 404  # no such image
    conn = db.connect(study_dir)
    assert conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 0
    conn.close()


def test_resubmission_keeps_the_last_answer_and_finish_locks(study):
    study_dir, summary, client = study
    ann, bob = summary["rater_tokens"]["ann"], summary["rater_tokens"]["bob"]
    items = _state(client, ann)["items"]
    assert sorted(i["id"] for i in items) == sorted(i["id"] for i in _state(client, bob)["items"])
    first = items[0]["id"]
    for answer, conf in (("real", 2), ("synthetic", 5), ("real", 4)):
        r = client.post(f"/r/{ann}/answer", json={"image_id": first, "answer": answer, "confidence": conf,
                                                 "comment": f"c{conf}"})
        assert r.status_code == 200 and r.json()["complete"] == 1
    conn = db.connect(study_dir)
    rows = conn.execute("SELECT answer, confidence, comment, revisions FROM answers").fetchall()
    assert [tuple(r) for r in rows] == [("real", 4, "c4", 3)]
    assert _state(client, bob)["items"][0]["answer"] is None  # bob never sees ann's answers
    assert client.post(f"/r/{ann}/finish").status_code == 409  # 15 images still open: no score yet
    truth = {r["id"]: r["truth"] for r in conn.execute("SELECT id, truth FROM images")}
    conn.close()
    for it in items:
        assert client.post(f"/r/{ann}/answer", json={"image_id": it["id"], "answer": truth[it["id"]],
                                                     "confidence": 5}).status_code == 200
    done = client.post(f"/r/{ann}/finish").json()
    assert done == {"finished": True, "total": 16, "correct": 16, "accuracy": 1.0}  # show_score=true
    assert client.post(f"/r/{ann}/answer", json={"image_id": first, "answer": "synthetic"}).status_code == 409
    assert _state(client, ann)["finished"] is True


def _cands(n: int, truth: str, sources=("m",), labels=(None,)) -> list[Candidate]:
    return [Candidate(np.zeros((4, 4), np.uint8), truth, sources[i % len(sources)] if truth == "synthetic" else "real",
                      labels[i % len(labels)], f"{truth}{i}") for i in range(n)]


def test_selection_is_balanced_seeded_and_stratified():
    real, syn = _cands(40, "real", labels=("a", "b")), _cands(60, "synthetic", ("m1", "m2", "m3"), ("a", "b"))
    one = select(real, syn, 20, 0.5, None, seed=3)
    assert [c.origin for c in one] == [c.origin for c in select(real, syn, 20, 0.5, None, seed=3)]
    assert [c.origin for c in one] != [c.origin for c in select(real, syn, 20, 0.5, None, seed=4)]
    assert sum(c.truth == "real" for c in one) == 10 and len({c.origin for c in one}) == 20
    truths = [c.truth for c in one]
    assert truths != sorted(truths) and truths != sorted(truths, reverse=True)  # shuffled
    by_model = select(real, syn, 21, 0.4, "model", seed=0)
    counts = pd.Series([c.source for c in by_model if c.truth == "synthetic"]).value_counts()
    assert sorted(counts.tolist()) == [4, 4, 5] and sum(c.truth == "real" for c in by_model) == 8
    by_class = select(real, syn, 20, 0.5, "class", seed=0)
    table = pd.crosstab([c.truth for c in by_class], [c.label for c in by_class])
    assert (table.to_numpy() == 5).all()
    with pytest.raises(ConfigError, match="needs 30 real images but only 20"):
        select(real[:20], syn, 60, 0.5, None, seed=0)
    with pytest.raises(ConfigError, match="stratify=class needs a class"):
        select(_cands(10, "real"), syn, 10, 0.5, "class", seed=0)


def test_fleiss_kappa_matches_the_published_example():
    """Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page (the example table: 10 subjects, 14 raters,
    5 categories, κ = 0.210; https://en.wikipedia.org/wiki/Fleiss%27_kappa#Worked_example)."""
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1], [7, 7, 0, 0, 0],
             [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    rows = []
    for subject, counts in enumerate(table):
        raters = iter(range(14))
        for category, count in enumerate(counts, start=1):
            rows += [{"rater": f"r{next(raters)}", "image_id": f"s{subject}", "answer": f"c{category}"}
                     for _ in range(count)]
    out = fleiss(pd.DataFrame(rows), [f"r{i}" for i in range(14)])
    assert out["n_images"] == 10 and out["n_raters"] == 14
    assert out["fleiss_kappa"] == pytest.approx(0.210, abs=5e-4)


def test_results_tables_and_figures(study, tmp_path):
    study_dir, summary, client = study
    conn = db.connect(study_dir)
    truth = {r["id"]: r["truth"] for r in conn.execute("SELECT id, truth FROM images")}
    conn.close()
    ann, bob = summary["rater_tokens"]["ann"], summary["rater_tokens"]["bob"]
    for i, (image_id, t) in enumerate(sorted(truth.items())):  # ann: always right; bob: always "real"
        client.post(f"/r/{ann}/answer", json={"image_id": image_id, "answer": t, "confidence": 1 + i % 5})
        client.post(f"/r/{bob}/answer", json={"image_id": image_id, "answer": "real", "confidence": 3,
                                               "comment": "looks real" if i == 0 else None})
    out = write_results(study_dir, tmp_path / "res")
    table = pd.read_csv(tmp_path / "res" / "per_rater.csv").set_index("rater")
    assert table.loc["ann", ["n", "correct", "accuracy", "sensitivity", "specificity"]].tolist() == [16, 16, 1, 1, 1]
    assert table.loc["ann", "p_value"] == pytest.approx(binomtest(16, 16, 0.5).pvalue)
    assert table.loc["bob", ["accuracy", "sensitivity", "specificity"]].tolist() == [0.5, 0.0, 1.0]
    assert table.loc["bob", "p_value"] == pytest.approx(1.0)
    assert table.loc["bob", "accuracy_ci_lo"] < 0.5 < table.loc["bob", "accuracy_ci_hi"]
    assert table.loc["all raters (pooled)", "n"] == 32
    # agreement: on real images both say real, on synthetic they disagree
    assert out["result"]["agreement"]["n_images"] == 16
    images = pd.read_csv(tmp_path / "res" / "per_image.csv")
    assert images["share_called_real"].iloc[0] == 1.0 and set(images.loc[images.truth == "synthetic",
                                                                           "share_called_real"]) == {0.5}
    conf = pd.read_csv(tmp_path / "res" / "per_confidence.csv")
    assert conf["n"].sum() == 32 and conf.loc[conf.confidence == 3, "n"].item() == 16 + 3
    assert "looks real" in (tmp_path / "res" / "comments.md").read_text()
    for name in ("per_rater", "difficulty", "confidence"):
        with Image.open(tmp_path / "res" / "figures" / f"{name}.png") as im:
            assert im.size[0] > 200
    html = (tmp_path / "res" / "results.html").read_text()
    assert "Fleiss" in html and "<table" in html and "data:image/png;base64," in html


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medsynbench", "turing", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_cli_create_add_rater_progress_results(tmp_path):
    real, syn = make_folders(tmp_path, 6, 6)
    study_dir = tmp_path / "s"
    made = _cli("create", f"study_dir={study_dir}", f"real_folder={real}", f"synthetic_folder={syn}", "n_images=8",
                "raters=[ann]", f"links_file={tmp_path / 'links.txt'}", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "8 images (4 real, 4 synthetic)" in made.stdout and "rater ann: http://127.0.0.1:8000/r/" in made.stdout
    assert (tmp_path / "links.txt").stat().st_mode & 0o077 == 0
    again = _cli("create", f"study_dir={study_dir}", f"real_folder={real}", f"synthetic_folder={syn}", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a study" in again.stderr
    added = _cli("add-rater", f"study_dir={study_dir}", "rater=bob", cwd=tmp_path)
    assert added.returncode == 0 and "rater bob: http" in added.stdout
    dup = _cli("add-rater", f"study_dir={study_dir}", "rater=bob", cwd=tmp_path)
    assert dup.returncode == 2 and "already exists" in dup.stderr
    prog = _cli("progress", f"study_dir={study_dir}", "format=json", cwd=tmp_path)
    assert [r["answered"] for r in json.loads(prog.stdout)] == [0, 0]
    res = _cli("results", f"study_dir={study_dir}", cwd=tmp_path)
    assert res.returncode == 0 and (study_dir / "results" / "per_rater.md").is_file()
    bad = _cli("nonsense", f"study_dir={study_dir}", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown turing action 'nonsense'" in bad.stderr
    too_many = _cli("create", f"study_dir={tmp_path / 't'}", f"real_folder={real}", f"synthetic_folder={syn}",
                    "n_images=40", cwd=tmp_path)
    assert too_many.returncode == 2 and "needs 20 real images but only 6" in too_many.stderr


def test_study_from_a_model_package(tmp_path):
    """A run exported as a model package (benchmark/zoo) gives the synthetic side; real images from a folder."""
    from medsynbench.benchmark.run import execute_run
    from medsynbench.benchmark.zoo import export_run
    from tests.conftest import SMOKE

    record = execute_run(compose_config([*SMOKE, f"paths.results_dir={tmp_path / 'results'}", "data.train_size=16",
                                         "evaluate=false"]))
    package = export_run(record["run_dir"], tmp_path / "pkg")
    real, _ = make_folders(tmp_path, 8, 0)
    summary = create_study(turing_cfg(tmp_path, f"study_dir={tmp_path / 's'}", f"package={package}",
                                      f"real_folder={real}", "n_images=8"))
    s = summary["settings"]
    assert (s["n_real"], s["n_synthetic"], s["image_size"]) == (4, 4, 32)  # the package's size; real ones resized
    assert [src["kind"] for src in s["sources"]] == ["package", "folder"]
    conn = db.connect(summary["study_dir"])
    assert {r[0] for r in conn.execute("SELECT source FROM images WHERE truth='synthetic'")} == {s["sources"][0]["name"]}
    conn.close()
    with pytest.raises(ConfigError, match="package="):
        create_study(turing_cfg(tmp_path, f"study_dir={tmp_path / 't'}", f"package={tmp_path / 'nope'}",
                                f"real_folder={real}", "n_images=8"))
