"""The probes of every chapter's graded exercises, one module per chapter (see genlab.probing).

Each module defines ``PROBES``, a list of :class:`genlab.probing.Probe`: the exercise's name, its
reference in the chapter's library module, and a function that draws the exercise's cases from a
NumPy generator (the visible checks of the test cell first, then random and edge cases).
"""
