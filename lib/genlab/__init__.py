"""GenLab: the small JAX/Flax library behind the GenLab course notebooks.

Modules are named after their idea (see ``shared/design.md``, section 3); import them
directly, e.g. ``from genlab import check, data, runtime``.
"""

__version__ = "0.1.0"
