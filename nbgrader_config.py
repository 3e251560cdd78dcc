"""nbgrader configuration for the GenLab course (run nbgrader from the repository root)."""

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.course_id = "genlab"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "chapters"

# Notebooks JIT-compile and train small models, so cells need longer than nbgrader's 30 s default.
c.Execute.timeout = 300
# An infinite loop inside compiled XLA code cannot be interrupted; without this, one such
# submission would abort the autograde run instead of scoring 0 on that exercise.
c.Execute.raise_on_iopub_timeout = False
# A student who deletes a graded cell gets it back (and scores 0 on it) instead of
# silently turning the notebook into "needs manual grading".
c.OverwriteCells.add_missing_cells = True

# Students see their solutions cleared to this stub.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
