"""The instructor's side of GenLab: what only instructors run (students never import it).

The course library that notebooks import is ``genlab`` itself; the runtime of the hidden tests
that the released notebooks call stays there too (``genlab.probing``, ``genlab.probes``).

How a submission flows through the modules::

    collect -> hash -> sandbox -> execute -> records -> judge -> gradebook -> report -> feedback

- :mod:`~genlab.classroom.steps`: one function per classroom step (release, collect, grade,
  feedback, export) on top of nbgrader; ``collect`` copies submissions to ``submitted/`` and
  records their hashes.
- :mod:`~genlab.classroom.grade`: grades a class. It checks each submission against its hash,
  grades the instructor's solution first as a canary, runs every student's ``nbgrader
  autograde`` in a sandbox, judges the probes' records outside the kernel and merges the
  verdicts into the gradebook.
- :mod:`~genlab.classroom.sandbox`: the bubblewrap sandbox of one grading process.
- :mod:`~genlab.classroom.limits`: its time, memory, process and disk limits.
- :mod:`~genlab.classroom.execute`: nbgrader's execute step, made to survive what students hand
  in (a dead or stuck kernel, huge output, duplicated or deleted cells).
- :mod:`~genlab.classroom.report`: the class report (``reports/CH.csv``): scores, reasons, flags.
- :mod:`~genlab.classroom.scan`: the static scan whose flags the report carries.
- :mod:`~genlab.classroom.similarity`: which answers share code, between students and with the
  course's reference code.
- :mod:`~genlab.classroom.feedback`: feedback pages without the hidden tests.
- :mod:`~genlab.classroom.grading`: notebook surgery (fill in answers, swap one function), the
  mutant runner of the test suite, gradebook scores.
- :mod:`~genlab.classroom.demo`: the demo class, a submission for every way grading can go wrong.
- :mod:`~genlab.classroom.hub`: a class on JupyterHub.
- :mod:`~genlab.classroom.colab`: a chapter's "Open in Colab" link.
- :mod:`~genlab.classroom.cli`: the ``genlab`` command line over all of the above.

Import the modules themselves (``from genlab.classroom import steps``); this package re-exports
nothing, so a module and a step of the same name (``grade``, ``feedback``) never clash.
"""
