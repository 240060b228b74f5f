"""Visual Turing tests: clinicians label real vs synthetic images in a local web app.

``medsynbench turing create|serve|add-rater|progress|results`` (docs/turing.md). Modules: :mod:`.create` (study
from runs, a model package or folders: seeded balanced selection, identical encoding), :mod:`.encode` (one
preprocessing and PNG encoding for every image), :mod:`.db` (SQLite in WAL mode, hashed tokens), :mod:`.server`
(FastAPI + Jinja2 pages), :mod:`.results` (per-rater statistics, Fleiss' kappa, difficulty, confidence).
"""
