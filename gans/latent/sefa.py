"""SeFa, closed-form factorisation of latent semantics (Shen & Zhou, CVPR 2021).

The first layer that reads the latent is an affine map y = A x + b; the directions n that change its output most are
the maximisers of ||A n||² over unit n, i.e. the eigenvectors of AᵀA with the largest eigenvalues. A is

- style-based generators: the weight of the style affine layer(s) of the synthesis network (``layers="first"``: the
  first modulated convolution's; ``"all"``: every modulation, concatenated as in the official implementation),
  with the equalised-learning-rate gain applied; directions live in w;
- every other generator (DCGAN family, SPADE): the first linear map of z (DCGAN's 4×4 transposed convolution
  flattened to [out, latent_dim], SPADE's ``fc``); only the columns that read z (not a class embedding); directions
  live in z.

As in the official code the columns of Aᵀ (one per output unit) are normalised to unit length first
(``normalize=True``). Eigenvectors are returned as unit rows, sorted by decreasing eigenvalue, each with the sign that
makes its largest-magnitude component positive (a deterministic choice: an eigenvector's sign is arbitrary).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from medsynbench.gans.latent.space import generator, is_style_based


def _style_affines(net, layers: str) -> list[nn.Module]:
    synthesis = net.synthesis
    convs = list(synthesis.convs)
    if layers == "first":
        return [convs[0].affine]
    if layers == "all":  # every modulation (the order of A's rows does not change AᵀA)
        return [conv.affine for conv in convs] + [t.affine for t in synthesis.torgbs]
    raise ValueError(f"SeFa layers must be 'first' or 'all', got {layers!r}")


def factor_weight(gan, layers: str = "first") -> tuple[torch.Tensor, str, list[str]]:
    """(A [out, latent], the space its input is in ('w' or 'z'), names of the layers used)."""
    net = generator(gan)
    if is_style_based(gan):
        mods = _style_affines(net, layers)
        weights = [m.weight.detach() * getattr(m, "w_gain", 1.0) for m in mods]
        names = [n for n, m in net.named_modules() if any(m is x for x in mods)]
        return torch.cat(weights, dim=0).double().cpu(), "w", names
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear) and module.in_features >= gan.latent_dim:
            return module.weight.detach()[:, :gan.latent_dim].double().cpu(), "z", [name]
        if isinstance(module, nn.ConvTranspose2d) and module.in_channels >= gan.latent_dim:
            w = module.weight.detach()[:gan.latent_dim]           # [in, out, kh, kw]
            return w.reshape(gan.latent_dim, -1).T.double().cpu(), "z", [name]
    raise ValueError(f"{gan.name}: no linear layer reading the latent found for SeFa")


def sefa(gan, k: int = 5, layers: str = "first", normalize: bool = True) -> dict:
    """Top-``k`` SeFa directions: ``directions`` [k, dim] (float32, unit rows), ``eigenvalues`` [k] (of AᵀA),
    ``space`` ('w' or 'z'), ``layers`` (module names) and ``eigenvalues_all``."""
    a, space, names = factor_weight(gan, layers)
    if normalize:
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if not 1 <= k <= a.shape[1]:
        raise ValueError(f"SeFa k must be in [1, {a.shape[1]}] (the latent dimension), got {k}")
    values, vectors = torch.linalg.eigh(a.T @ a)           # ascending; columns are eigenvectors
    order = torch.argsort(values, descending=True)
    values, vectors = values[order], vectors[:, order].T   # rows, descending
    idx = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors[torch.arange(len(vectors)), idx])
    vectors = vectors * signs[:, None]
    return {"directions": vectors[:k].float(), "eigenvalues": values[:k].float(), "eigenvalues_all": values.float(),
            "space": space, "layers": names, "normalize": normalize}
