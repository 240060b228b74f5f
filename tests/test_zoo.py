"""Generator zoo: export -> registry -> find -> rank -> generate -> dataloader; sameness with the run's sampler;
every refusal of an untrusted package; search and rank over a registry of 24 packages."""
from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynbench.benchmark.zoo import PackageError, export_run, load_generator, verify_package
from medsynbench.benchmark.zoo.generate import as_dataloader, generate
from medsynbench.benchmark.zoo.package import MANIFEST, METADATA, MODEL_ARGS, WEIGHTS, write_package
from medsynbench.benchmark.zoo.registry import Registry, add_package, import_medigan, read_index
from medsynbench.benchmark.zoo.search import find, find_rank_and_generate, rank
from medsynbench.io import sha256_file
from tests.conftest import SMOKE, compose_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    from medsynbench.benchmark.run import execute_run

    root = tmp_path_factory.mktemp("zoo")
    smoke = [o for o in SMOKE if not o.startswith("downstream=")]  # metrics are what a package carries
    cfg = compose_config([*smoke, "downstream=none", f"paths.results_dir={root / 'results'}", "data.train_size=16"])
    record = execute_run(cfg)
    package = export_run(record["run_dir"], root / "packages" / "tiny", package_id="tiny")
    return {"root": root, "cfg": cfg, "record": record, "run_dir": Path(record["run_dir"]), "package": package}


def _copy(pkg: Path, dst: Path) -> Path:
    shutil.copytree(pkg, dst)
    return dst


def _rewrite_manifest(pkg: Path, change) -> None:
    manifest = json.loads((pkg / MANIFEST).read_text())
    change(manifest)
    (pkg / MANIFEST).write_text(json.dumps(manifest))


# --- round trip and sameness ----------------------------------------------------------------------------------------
def test_round_trip_export_registry_find_rank_generate_dataloader(trained, tmp_path):
    from medsynbench.benchmark.data import load_dataset

    pkg = trained["package"]
    meta = json.loads((pkg / METADATA).read_text())
    assert meta["dataset"]["name"] == "isic_mini" and meta["train_size"] == 16 and meta["resolution"] == 32
    assert meta["produces"]["masks"] and meta["modality"] == "dermoscopy" and meta["license"] == "CC BY-NC 4.0"
    stored = {m["metric"]: m["value"] for m in trained["record"]["metrics"]}
    assert stored and all(meta["metrics"][k]["value"] == v for k, v in stored.items())
    assert meta["metrics"]["fd_random_cnn"]["extractor"]  # the protocol travels with the number
    assert (pkg / "MODEL_CARD.md").read_text().startswith("# Model card")
    manifest = json.loads((pkg / MANIFEST).read_text())
    assert all(sha256_file(pkg / f) == h for f, h in manifest["files"].items())

    index = tmp_path / "registry.json"
    add_package(index, pkg)
    assert read_index(index)["version"] == 1 and read_index(index)["packages"]["tiny"]["location"] == str(pkg.resolve())
    reg = Registry.open([index])
    assert find(reg, ["dermoscopy", "dcgan"], "AND") == ["tiny"]
    ranking = rank(reg, "fd_random_cnn")
    assert ranking.best == "tiny" and not ranking.higher_is_better
    out = tmp_path / "gen"
    ranking, result = find_rank_and_generate(reg, ["isic_mini"], "fd_random_cnn", 1000, output_dir=out,
                                             batch_size=128, seed=5)
    assert result["n"] == 1000 and len(list((out / "images").glob("*.png"))) == 1000
    assert len((out / "manifest.csv").read_text().splitlines()) == 1001
    bundle = load_dataset(trained["cfg"].dataset, trained["cfg"].data)
    loader = as_dataloader(result, batch_size=100, shuffle=True, real=bundle.train)
    assert len(loader.dataset) == 1000 + len(bundle.train)
    batches = list(loader)
    assert len(batches) == 11
    first = batches[0]
    assert first["image"].shape[1:] == (3, 32, 32) and first["mask"].shape[1:] == (32, 32)
    assert first["image"].min() >= -1 and first["image"].max() <= 1 and first["synthetic"].any()


def test_package_samples_equal_the_runs_sampler(trained):
    from medsynbench.benchmark.data import load_dataset
    from medsynbench.benchmark.evaluate import sample_imageset
    from medsynbench.benchmark.reevaluate import load_run

    cfg, gan, _ = load_run(trained["run_dir"], torch.device("cpu"))
    bundle = load_dataset(cfg.dataset, cfg.data)
    for seed, n, bs in ((7, 300, 64), (1_000_003, 129, 37)):
        ref = sample_imageset(gan, n, seed, bundle, batch_size=bs)
        out = generate(trained["package"], num_samples=n, seed=seed, batch_size=bs)
        assert torch.equal(out["images"], ref.images) and torch.equal(out["masks"], ref.masks)
    pgan, meta = load_generator(trained["package"], "auto")
    assert meta["id"] == "tiny" and torch.equal(pgan.sample(9, 3)["images"], gan.sample(9, 3)["images"])
    other = generate(trained["package"], num_samples=300, seed=8)["images"]
    assert not torch.equal(other, generate(trained["package"], num_samples=300, seed=7)["images"])


def test_chunked_latents_equal_one_draw():
    """ZStream hands out z a chunk at a time: the same numbers as one draw, and the generator ends where it would."""
    from medsynbench.benchmark.zoo.generate import ZStream

    for n, d, c in ((1000, 128, 64), (1001, 100, 37), (100001, 128, 777), (200001, 3, 4999), (37, 7, 16), (10, 1, 3),
                    (5000, 13, 1)):
        g = torch.Generator().manual_seed(3)
        full, after = torch.randn(n, d, generator=g), torch.randint(0, 2 ** 62, (4,), generator=g)
        g = torch.Generator().manual_seed(3)
        stream = ZStream(None, n, d, g)
        parts = torch.cat([stream.take(min(c, n - s)) for s in range(0, n, c)])
        assert torch.equal(parts, full) and torch.equal(torch.randint(0, 2 ** 62, (4,), generator=g), after), (n, d)


def test_generation_resumes_after_interruption_and_refuses_other_parameters(trained, tmp_path):
    out = tmp_path / "gen"
    whole = generate(trained["package"], num_samples=200, seed=2, batch_size=50, output_dir=tmp_path / "whole")

    class Stop(Exception):
        pass

    def stop_after_two(done, n):
        if done >= 100:
            raise Stop

    with pytest.raises(Stop):
        generate(trained["package"], num_samples=200, seed=2, batch_size=50, output_dir=out, progress=stop_after_two)
    with open(out / "manifest.csv", "a") as fh:  # a row cut short by a kill
        fh.write("100,images/0000100.png,mas")
    result = generate(trained["package"], num_samples=200, seed=2, batch_size=50, output_dir=out)
    assert result["resumed_from"] == 100
    assert (out / "manifest.csv").read_text() == Path(whole["manifest"]).read_text()
    for name in ("images/0000150.png", "masks/0000199.png"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert json.loads((out / "generation.json").read_text())["status"] == "complete"
    with pytest.raises(PackageError, match="other parameters"):
        generate(trained["package"], num_samples=200, seed=3, batch_size=50, output_dir=out)


# --- refusals: each leaves no output behind ---------------------------------------------------------------------------
def _refused(pkg: Path, match: str, tmp_path: Path) -> None:
    out = tmp_path / "must_not_exist"
    with pytest.raises(PackageError, match=match):
        load_generator(pkg, "cpu")
    with pytest.raises(PackageError, match=match):
        generate(pkg, num_samples=4, output_dir=out)
    assert not out.exists()


def test_refuses_checksum_mismatch(trained, tmp_path):
    pkg = _copy(trained["package"], tmp_path / "p")
    data = bytearray((pkg / WEIGHTS).read_bytes())
    data[-1] ^= 1
    (pkg / WEIGHTS).write_bytes(bytes(data))
    _refused(pkg, "checksum mismatch for 'weights.safetensors'", tmp_path)


@pytest.mark.parametrize("bad", ["../outside.json", "/etc/passwd", "sub/../../x"])
def test_refuses_paths_escaping_the_package(trained, tmp_path, bad):
    pkg = _copy(trained["package"], tmp_path / "p")
    (tmp_path / "outside.json").write_text("{}")
    _rewrite_manifest(pkg, lambda m: m["files"].__setitem__(bad, "0" * 64))
    _refused(pkg, "escapes the package folder|absolute path", tmp_path)


def test_refuses_symlinks(trained, tmp_path):
    pkg = _copy(trained["package"], tmp_path / "p")
    outside = tmp_path / "elsewhere.json"
    shutil.copy(pkg / METADATA, outside)
    (pkg / METADATA).unlink()
    os.symlink(outside, pkg / METADATA)
    _refused(pkg, "symlink", tmp_path)


def test_refuses_missing_file(trained, tmp_path):
    pkg = _copy(trained["package"], tmp_path / "p")
    (pkg / MODEL_ARGS).unlink()
    _refused(pkg, "'model_args.json' is missing", tmp_path)
    pkg2 = _copy(trained["package"], tmp_path / "p2")
    _rewrite_manifest(pkg2, lambda m: m["files"].pop(WEIGHTS))
    _refused(pkg2, "lists no", tmp_path)


def test_refuses_unknown_architecture(trained, tmp_path):
    pkg = _copy(trained["package"], tmp_path / "p")
    args = json.loads((pkg / MODEL_ARGS).read_text())
    args["_target_"] = "os.system"
    (pkg / MODEL_ARGS).write_text(json.dumps(args))
    _rewrite_manifest(pkg, lambda m: m["files"].__setitem__(MODEL_ARGS, sha256_file(pkg / MODEL_ARGS)))
    _refused(pkg, "unknown architecture 'os.system'", tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['ZOO_PWNED']}",))


@pytest.mark.parametrize("name", ["weights.pt", WEIGHTS])
def test_refuses_pickle_with_code_without_running_it(trained, tmp_path, monkeypatch, name):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("ZOO_PWNED", str(marker))
    pkg = _copy(trained["package"], tmp_path / "p")
    (pkg / WEIGHTS).unlink()
    torch.save({"state": _Evil()}, pkg / name) if name.endswith(".pt") else \
        (pkg / name).write_bytes(pickle.dumps({"state": _Evil()}))

    def point(m):
        m["files"].pop(WEIGHTS)
        m["files"][name] = sha256_file(pkg / name)
    _rewrite_manifest(pkg, point)
    _refused(pkg, "not a .safetensors file|is a pickle|lists no", tmp_path)
    assert not marker.exists()


def test_refuses_a_package_whose_manifest_differs_from_the_registry(trained, tmp_path):
    index = tmp_path / "r.json"
    pkg = _copy(trained["package"], tmp_path / "p")
    add_package(index, pkg)
    _rewrite_manifest(pkg, lambda m: m.__setitem__("id", "renamed"))
    with pytest.raises(PackageError, match="in the registry"):
        Registry.open(index).load("tiny")


def test_failed_export_leaves_nothing(trained, tmp_path):
    gan, meta = load_generator(trained["package"])
    bad = {**meta, "unserialisable": object()}
    bad["id"] = "x"
    with pytest.raises(Exception):
        write_package(tmp_path / "x", gan, {"id": "x", "architecture": None})
    assert list(tmp_path.iterdir()) == []
    assert bad  # metadata with non-JSON values is written with str() (default=str), not refused


# --- search and rank over 24 packages -----------------------------------------------------------------------------------
MODALITIES = ["dermoscopy", "endoscopy", "MRI", "X-ray"]
ARCHS = ["dcgan", "stylegan2", "spade"]


@pytest.fixture(scope="module")
def big_registry(trained, tmp_path_factory):
    """24 packages from one trained GAN: the same weights, different metadata and metrics."""
    root = tmp_path_factory.mktemp("reg")
    gan, base = load_generator(trained["package"])
    index = root / "team.json"
    for i in range(24):
        meta = copy.deepcopy(base)
        meta.pop("package_dir")
        meta.update(id=f"m{i:02d}", modality=MODALITIES[i % 4], tags=[f"tag{i % 3}"],
                    architecture={**meta["architecture"], "name": ARCHS[i % 3]})
        meta["dataset"] = {"name": f"set{i % 2}", "nested": {"deep": ["anatomy", {"organ": "brain" if i < 6 else
                                                                                    "skin"}]}}
        meta["metrics"] = {"fd_unet": {"value": 10.0 + (i * 7) % 24, "higher_is_better": False},
                           "dice_unet@synthetic": {"value": 0.5 + ((i * 5) % 24) / 100, "higher_is_better": True}}
        if i % 5 == 0:
            del meta["metrics"]["fd_unet"]
        add_package(index, write_package(root / "packages" / f"m{i:02d}", gan, meta))
    return index


def test_find_and_or_xor_recursive(big_registry):
    reg = Registry.open(big_registry)
    assert len(reg) == 24 and read_index(big_registry)["version"] == 24
    mri = {f"m{i:02d}" for i in range(24) if i % 4 == 2}
    assert set(find(reg, ["mri"])) == mri
    assert set(find(reg, ["MRI", "spade"], "AND")) == {p for p in mri if int(p[1:]) % 3 == 2}
    assert set(find(reg, ["endoscopy", "spade"], "OR")) == {f"m{i:02d}" for i in range(24) if i % 4 == 1 or i % 3 == 2}
    xor = set(find(reg, ["endoscopy", "spade"], "XOR"))
    assert xor == {f"m{i:02d}" for i in range(24) if (i % 4 == 1) != (i % 3 == 2)}
    assert set(find(reg, ["brain"])) == {f"m{i:02d}" for i in range(6)}  # nested dict in a list in a dict
    with pytest.raises(PackageError, match="operator"):
        find(reg, ["x"], "NAND")


def test_rank_both_directions_and_missing_metric(big_registry):
    reg = Registry.open(big_registry)
    fd = rank(reg, "fd_unet")
    values = [v for _, v in fd.ranked]
    assert not fd.higher_is_better and values == sorted(values)
    assert fd.missing == [f"m{i:02d}" for i in range(0, 24, 5)] and len(fd.ranked) == 24 - 5
    dice = rank(reg, "dice_unet@synthetic", ids=find(reg, ["dermoscopy"]))
    values = [v for _, v in dice.ranked]
    assert dice.higher_is_better and values == sorted(values, reverse=True) and len(values) == 6
    assert dice.best == max(dice.ranked, key=lambda t: t[1])[0]
    nothing = rank(reg, "kid_unet")
    assert nothing.ranked == [] and len(nothing.missing) == 24 and not nothing.higher_is_better  # registry direction


def test_registries_combine_in_priority_order_and_medigan_imports(big_registry, trained, tmp_path):
    local = tmp_path / "local.json"
    add_package(local, trained["package"])
    medigan = tmp_path / "global.json"
    medigan.write_text(json.dumps({"00001_DCGAN_MMG_CALC_ROI": {
        "execution": {"package_link": "https://zenodo.org/record/1/files/x.zip"},
        "selection": {"performance": {"FID": 67.6, "FID_ratio": 0.497, "FID_no_images": 1000,
                                      "SEG": {"trained_on_real": {"dice": 0.8}}},
                      "organ": ["breast"], "modality": ["MMG", "Mammography"], "dataset": ["INbreast"],
                      "type": "DCGAN", "height": 128, "license": "MIT", "tags": ["calcification"]},
        "description": {"title": "DCGAN calcification ROIs", "doi": ["10.5281/zenodo.5187714"]}}}))
    assert import_medigan(medigan, local) == ["00001_DCGAN_MMG_CALC_ROI"]
    reg = Registry.open([local, big_registry])
    assert len(reg) == 26
    assert find(reg, ["mammography", "breast"]) == ["00001_DCGAN_MMG_CALC_ROI"]
    entry = reg.get("00001_DCGAN_MMG_CALC_ROI")
    assert entry.metadata["metrics"]["fid_inception"]["value"] == 67.6
    assert entry.metadata["metrics"]["r_fd_inception"]["higher_is_better"]
    assert entry.metadata["metrics"]["dice_seg@real"]["value"] == 0.8 and entry.metadata["resolution"] == 128
    with pytest.raises(PackageError, match="search only"):
        reg.load("00001_DCGAN_MMG_CALC_ROI")
    gan, meta = reg.load("m03")
    assert meta["id"] == "m03" and gan.image_size == 32


# --- latent grids --------------------------------------------------------------------------------------------------------
def _cell(png, layout, i, dx=0):
    """The i-th cell of a rendered grid (or its mask when dx = mask_dx), downsampled back to model pixels."""
    x, y = layout["cells"][i]
    x += dx
    s = layout["scale"]
    return png[y:y + 32 * s:s, x:x + 32 * s:s]


def test_grids_slerp_in_z_with_masks_beside_images(trained, tmp_path):
    from PIL import Image

    from medsynbench.benchmark.zoo.grids import MASK_PALETTE, colour_masks, write_grids

    out = write_grids(trained["package"], tmp_path / "dc", seeds=[0, 1, 2], steps=5)
    assert out["space"] == "z-slerp" and out["sweep_kind"] == "seed"
    interp, lay = out["samples"]["interpolation"], out["layout"]["interpolation"]
    assert interp["images"].shape[0] == 2 * 5 and interp["masks"].shape == (10, 32, 32)
    # row r ends at seed r+1's latent, where row r+1 starts (DCGAN has no per-sample noise)
    assert (interp["images"][4] - interp["images"][5]).abs().max() < 1e-5
    assert (interp["images"][0] - interp["images"][4]).abs().max() > 1e-4  # (a 4-step DCGAN varies little)
    png = np.asarray(Image.open(out["interpolation"]).convert("RGB"))
    assert lay["scale"] == 3 and lay["mask_dx"] == 32 * 3 + 2
    rgb = ((interp["images"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in (0, 7):  # every cell shows its image and, beside it, its mask in the palette
        assert (_cell(png, lay, i) == rgb[i]).all()
        assert (_cell(png, lay, i, lay["mask_dx"]) == colour_masks(interp["masks"][i:i + 1])[0]).all()
    assert {tuple(c) for c in _cell(png, lay, 0, lay["mask_dx"]).reshape(-1, 3)} <= set(MASK_PALETTE[:2])
    page = Path(out["html"]).read_text()
    assert "interpolation.png" in page and "sweep.png" in page and "background, lesion" in page
    assert out["samples"]["sweep"]["images"].shape[0] == 3 and len(out["layout"]["sweep"]["cells"]) == 3


def test_grids_lerp_in_w_for_style_models_and_class_sweeps(tmp_path):
    from medsynbench.benchmark.zoo.grids import write_grids
    from medsynbench.gans.base import build_from_args

    style = build_from_args({"_target_": "medsynbench.gans.stylegan2.StyleGAN2", "name": "stylegan2",
                             "image_size": 16, "image_channels": 1, "latent_dim": 16, "w_dim": 16,
                             "mapping_layers": 1, "channel_base": 128, "channel_max": 16, "ada": False})
    pkg = write_package(tmp_path / "style", style, {"id": "style"})
    out = write_grids(pkg, tmp_path / "sg", seeds=[3, 4], steps=4)
    assert out["space"] == "w-lerp" and "interpolation.png" in Path(out["html"]).read_text()
    assert out["layout"]["interpolation"]["mask_dx"] is None and out["layout"]["interpolation"]["scale"] == 6
    assert out["samples"]["interpolation"]["images"].shape == (4, 1, 16, 16)
    cgan = build_from_args({"_target_": "medsynbench.gans.dcgan.DCGAN", "name": "cgan", "conditional": True,
                            "num_classes": 3, "image_size": 32, "image_channels": 1, "g_filters": 8, "d_filters": 8,
                            "latent_dim": 8})
    pkg = write_package(tmp_path / "cgan", cgan, {"id": "cgan", "dataset": {"class_names": ["a", "b", "c"]}})
    out = write_grids(pkg, tmp_path / "cg", seeds=[0, 1], steps=3)
    sweep = out["samples"]["sweep"]
    assert out["sweep_kind"] == "class" and sweep["labels"].tolist() == [0, 1, 2, 0, 1, 2]
    assert not torch.equal(sweep["images"][0], sweep["images"][1])  # the class changes the image, z does not
    assert len(set(out["samples"]["interpolation"]["labels"].tolist())) == 1  # one class along the row


# --- the command line: export -> registry -> find -> rank -> generate, and a refusal ---------------------------------
def _cli(*args):
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_export_add_find_rank_generate_and_refuse_a_tampered_package(trained, tmp_path):
    from PIL import Image

    from medsynbench.benchmark.zoo.generate import _to_uint8

    reg, pkg = tmp_path / "registry.json", tmp_path / "packages" / "cli-tiny"
    ex = _cli("export", f"run_dir={trained['run_dir']}", f"out_dir={pkg}", "package_id=cli-tiny", f"registry={reg}",
              "+metadata.authors=[Tester]", "+metadata.project=clitest",
              f"paths.results_dir={trained['root'] / 'results'}")
    assert ex.returncode == 0, ex.stderr[-2000:]
    meta = json.loads((pkg / METADATA).read_text())
    assert meta["authors"] == ["Tester"] and meta["id"] == "cli-tiny"
    fd = meta["metrics"]["fd_random_cnn"]["value"]
    assert fd == next(m["value"] for m in trained["record"]["metrics"] if m["metric"] == "fd_random_cnn")
    # a second package (same weights) that is better by fd, has a metric cli-tiny lacks, and another modality
    gan, base = load_generator(pkg)
    other = {**base, "id": "other", "modality": "MRI", "project": None,
             "metrics": {"fd_random_cnn": {"value": fd / 2, "higher_is_better": False},
                         "dice_unet@synthetic": {"value": 0.7, "higher_is_better": True}}}
    other.pop("package_dir")
    write_package(tmp_path / "packages" / "other", gan, other)
    add_package(reg, write_package(tmp_path / "packages" / "no-fd", gan, {**other, "id": "no-fd", "metrics": {}}))
    add = _cli("zoo", "add", f"package={tmp_path / 'packages' / 'other'}", f"registries=[{reg}]")
    assert add.returncode == 0 and "added other" in add.stdout, add.stderr[-2000:]
    assert set(read_index(reg)["packages"]) == {"cli-tiny", "other", "no-fd"}

    def zoo(*args):
        out = _cli("zoo", *args, f"registries=[{reg}]")
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    assert json.loads(zoo("find", "keywords=[dermoscopy,clitest]", "operator=AND", "format=json")) == ["cli-tiny"]
    assert sorted(json.loads(zoo("find", "keywords=[clitest,mri]", "operator=OR", "format=json"))) == \
        ["cli-tiny", "no-fd", "other"]
    ranking = json.loads(zoo("rank", "metric=fd_random_cnn", "format=json"))
    assert [r["id"] for r in ranking["ranked"]] == ["other", "cli-tiny"] and not ranking["higher_is_better"]
    assert ranking["missing"] == ["no-fd"] and ranking["ranked"][1]["value"] == fd

    gen = tmp_path / "gen"
    assert "generated 70 samples" in zoo("generate", "model_id=cli-tiny", "num_samples=70", "batch_size=32",
                                         "seed=3", f"output_dir={gen}")
    rows = (gen / "manifest.csv").read_text().splitlines()
    assert rows[0] == "index,image,mask,label,package_id,seed" and len(rows) == 71
    assert len(list((gen / "images").glob("*.png"))) == 70 and len(list((gen / "masks").glob("*.png"))) == 70
    ref = generate(pkg, num_samples=70, seed=3, batch_size=32)
    for i in (0, 69):  # the CLI's files are the API's samples for that seed
        assert (np.asarray(Image.open(gen / "images" / f"{i:07d}.png")) == _to_uint8(ref["images"][i:i + 1])[0]).all()
        assert (np.asarray(Image.open(gen / "masks" / f"{i:07d}.png")) == ref["masks"][i].numpy()).all()

    bad = _copy(pkg, tmp_path / "tampered")
    data = bytearray((bad / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 1
    (bad / WEIGHTS).write_bytes(bytes(data))
    refused = _cli("zoo", "generate", f"package={bad}", "num_samples=8", f"output_dir={tmp_path / 'nothing'}")
    assert refused.returncode == 2 and not (tmp_path / "nothing").exists()
    assert len(refused.stderr.strip().splitlines()) == 1 and "checksum mismatch" in refused.stderr, refused.stderr


def test_cli_export_the_best_run_of_a_sweep(tmp_path):
    from medsynbench.benchmark.store import load_records

    results = tmp_path / "results"
    smoke = [o for o in SMOKE if not o.startswith("downstream=")]
    run = _cli("train", "--multirun", *smoke, "downstream=none", "data.train_size=16", "train.steps=2", "seed=0,1",
               f"paths.results_dir={results}")
    assert run.returncode == 0, run.stderr[-3000:]
    kid = {r["training_id"]: next(m["value"] for m in r["metrics"] if m["metric"] == "kid_random_cnn")
           for r in load_records(results / "store")}
    assert len(kid) == 2 and len(set(kid.values())) == 2
    ex = _cli("export", "sweep_dir=latest", "metric=kid_random_cnn", f"paths.results_dir={results}")
    assert ex.returncode == 0, ex.stderr[-2000:]
    best = min(kid, key=kid.get)  # KID: lower is better
    meta = json.loads((results / "zoo" / "packages" / best / METADATA).read_text())
    assert meta["source"]["training_id"] == best and f"{best} = " in ex.stdout
    missing = _cli("export", "sweep_dir=latest", "metric=kid_unet", f"paths.results_dir={results}")
    assert missing.returncode == 2 and "has the metric 'kid_unet'" in missing.stderr
    top = _cli("--help").stdout
    assert "\n  export " in top and "\n  zoo " in top and "grids|verify" in top
