"""The lowest layer of medsynbench, shared by every other package.

``gans``, ``metrics`` and ``downstream`` are libraries; ``benchmark`` orchestrates them. All four may import this
package, and this package imports none of them: data containers (:mod:`medsynbench.types`), atomic writes, content
hashes and file locks for shared artefacts (:mod:`medsynbench.io`).
"""
