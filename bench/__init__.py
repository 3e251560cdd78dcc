"""The GenLab benchmarks (`make bench`, see bench/run.py)."""

# First, so that JAX starts with one CPU device per core (genlab/__init__.py).
import genlab  # noqa: F401
