"""Feature-space maps of real vs synthetic images (empirical study Fig. 6; dermatology study): UMAP (umap-learn) and
t-SNE (scikit-learn) embeddings in 2-D, per run.

Two spaces: a metrics extractor's (``downstream.maps.extractor``, default the first of ``metrics.extractors``; the
features the metrics already computed: real test images and the metric set of synthetic images) and the downstream
task model's encoder (the model trained on the real training split: the U-Net encoder's deepest feature map, or the
classifier's pooled pre-logit features; see ``Task.features``). Each side is subsampled to ``max_points`` (seeded),
features are standardised, and both methods are seeded (``downstream.maps.seed``; UMAP then runs single-threaded, so
the layout is reproducible). Written to ``<evaluation dir>/maps/``: ``<space>.png`` (one panel per method) and
``coordinates.csv`` (space, method, source, index, x, y) for the report's figures.

    downstream.maps.enabled=true  downstream.maps.methods=[umap,tsne]  downstream.maps.max_points=500
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)


def embed(features: np.ndarray, method: str, seed: int) -> np.ndarray:
    """[N, D] -> [N, 2] with UMAP or t-SNE, seeded."""
    x = np.asarray(features, dtype=np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    n = len(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, perplexity=float(min(30.0, max(2.0, (n - 1) / 3))), init="pca",
                    random_state=seed).fit_transform(x)
    if method == "umap":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden to 1 by setting random_state": intended
            import umap

            return umap.UMAP(n_components=2, n_neighbors=int(min(15, n - 1)), min_dist=0.1, random_state=seed,
                             n_jobs=1).fit_transform(x)
    raise ValueError(f"downstream.maps.methods: unknown method {method!r}; choose umap or tsne")


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def map_space(real: np.ndarray, synthetic: np.ndarray, methods: list[str], seed: int, max_points: int,
              space: str) -> pd.DataFrame:
    """Coordinates of both sets in one embedding per method (rows: space, method, source, index, x, y)."""
    ri, si = _subsample(len(real), max_points, seed), _subsample(len(synthetic), max_points, seed + 1)
    feats = np.concatenate([np.asarray(real)[ri], np.asarray(synthetic)[si]])
    source = np.array(["real"] * len(ri) + ["synthetic"] * len(si))
    index = np.concatenate([ri, si])
    frames = []
    for method in methods:
        xy = embed(feats, method, seed)
        frames.append(pd.DataFrame({"space": space, "method": method, "source": source, "index": index,
                                    "x": xy[:, 0], "y": xy[:, 1]}))
    return pd.concat(frames, ignore_index=True)


def plot_space(df: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(df["method"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        part = df[df["method"] == method]
        for source, colour in (("real", "tab:blue"), ("synthetic", "tab:orange")):
            sel = part[part["source"] == source]
            ax.scatter(sel["x"], sel["y"], s=8, alpha=0.6, c=colour, label=f"{source} ({len(sel)})", linewidths=0)
        ax.set_title({"umap": "UMAP", "tsne": "t-SNE"}.get(method, method))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="best", fontsize=8, markerscale=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def feature_maps(cfg, maps_cfg, bundle, synthetic, prepared, synthetic_feats: dict, models: dict | None, device,
                 out_dir: Path) -> dict[str, str]:
    """Maps of every requested space; returns the artefact paths (PNG per space, one coordinates CSV)."""
    from medsynbench.downstream.config import parse_settings
    from medsynbench.downstream.runner import _normalise
    from medsynbench.downstream.tasks import TASKS

    out_dir = Path(out_dir)
    spaces: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    if prepared:
        name = maps_cfg.extractor or prepared[0].name
        chosen = next((p for p in prepared if p.name == name), None)
        if chosen is None:
            raise ValueError(f"downstream.maps.extractor={name!r} is not one of metrics.extractors "
                             f"{[p.name for p in prepared]}")
        spaces.append((f"extractor_{name}", f"{name} features", np.asarray(chosen.real_feats),
                       np.asarray(synthetic_feats[name])))
    s = parse_settings(cfg.downstream)
    task = TASKS.get(s.task)
    if maps_cfg.task_encoder and task is not None:
        model = (models or {}).get("real")
        if model is None:
            log.warning("maps: no downstream model trained on real data (train_on without 'real', or skipped): "
                        "no encoder-space map")
        else:
            spec = getattr(s, task.weights_key)
            with torch.random.fork_rng(devices=[]):
                feats = [task.features(model, _normalise(x.float(), spec), s.eval_batch_size, str(device), s).numpy()
                         for x in (bundle.test.images, synthetic.images)]
            spaces.append((f"{task.name}_encoder", f"{task.model_name(s)} encoder (trained on real)", *feats))
    frames, artifacts = [], {}
    seed = maps_cfg.seed
    for space, label, real, fake in spaces:
        df = map_space(real, fake, maps_cfg.methods, seed, maps_cfg.max_points, space)
        png = out_dir / f"{space}.png"
        plot_space(df, png, f"{bundle.name}: real test vs synthetic, {label} (seed {seed})")
        artifacts[f"map_{space}"] = str(png)
        frames.append(df)
    if frames:
        csv = out_dir / "coordinates.csv"
        pd.concat(frames, ignore_index=True).to_csv(csv, index=False, float_format="%.5f")
        artifacts["map_coordinates"] = str(csv)
    return artifacts
