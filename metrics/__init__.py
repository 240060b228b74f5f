"""medsynbench metrics suite: feature extractors, a feature cache, and registered metrics with provenance records.

    ext = get_extractor("unet_encoder", train_set=bundle.train, cache_dir=...)
    feats = ext.features(images)                       # [N, d]
    records = compute_feature_metrics(real, fake, names=["fd", "kid", "prdc"], extractor=ext.describe())
"""
from medsynbench.metrics.registry import get_metric, list_metrics, register_metric
from medsynbench.metrics import frechet, inception_score, kid, ppl, prdc  # noqa: F401  (register the metrics)
from medsynbench.metrics import frd, image_metrics  # noqa: F401  (register the image metrics)
from medsynbench.metrics.cache import FeatureCache
from medsynbench.metrics.compute import compute_feature_metrics, compute_image_metrics
from medsynbench.metrics.extractors import get_extractor, list_extractors, register_extractor
from medsynbench.metrics.frechet import frechet_distance, frechet_distance_from_stats, gaussian_stats

__all__ = ["FeatureCache", "compute_feature_metrics", "compute_image_metrics", "frechet_distance",
           "frechet_distance_from_stats", "gaussian_stats", "get_extractor", "get_metric", "list_extractors",
           "list_metrics", "register_extractor", "register_metric"]
