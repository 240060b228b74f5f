"""Latent-space analysis for every GAN of the zoo: projection (GAN inversion) of real images, SeFa directions,
edits along directions and latent walks. A library: it imports the GANs and metrics, never ``medsynbench.benchmark``
(the ``project`` and ``sefa`` commands live in benchmark/latent.py)."""
from medsynbench.gans.latent.edits import base_latents, class_walk, edit, edit_grid, seed_walk
from medsynbench.gans.latent.losses import ExtractorLoss, FeatureLoss, LPIPSLoss, feature_loss, pixel_loss
from medsynbench.gans.latent.projection import ProjectionSettings, initial_latents, project, project_chunked
from medsynbench.gans.latent.sefa import factor_weight, sefa
from medsynbench.gans.latent.space import (Latents, is_style_based, render, resolve_space, seed_latents, synthesize,
                                           to_w)

__all__ = ["ExtractorLoss", "FeatureLoss", "LPIPSLoss", "Latents", "ProjectionSettings", "base_latents",
           "class_walk", "edit", "edit_grid", "factor_weight", "feature_loss", "initial_latents", "is_style_based",
           "pixel_loss", "project", "project_chunked", "render", "resolve_space", "seed_latents", "seed_walk", "sefa",
           "synthesize", "to_w"]
