"""nbgrader configuration for the GenLab course (run nbgrader from the repository root)."""

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    OverwriteKernelspec,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

from genlab.classroom.execute import (
    DropDuplicateIds,
    DropKernelResults,
    QuietOverwriteCells,
    ResilientExecute,
)
from genlab.classroom.feedback import HideHiddenTests

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
c.QuietOverwriteCells.add_missing_cells = True

# A graded cell a student duplicated is kept once (nbgrader's DeduplicateIds would crash).
# QuietOverwriteCells: OverwriteCells without its "checksum ... has changed!" warning for test
# cells that differ from the gradebook's only by the hidden tests the release removed.
c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    DropDuplicateIds,
    OverwriteKernelspec,
    QuietOverwriteCells,
    CheckCellMetadata,
]
# nbgrader's autograde steps with Execute replaced by ResilientExecute: after a cell that timed
# out (a loop stuck in XLA ignores interrupts) or killed the kernel (os._exit, out of memory) it
# restarts the kernel, re-runs the earlier cells and goes on, so only that exercise scores 0;
# it also caps each cell's recorded output.
# DropKernelResults: a test cell's execute_result is not partial credit (genlab decides scores
# outside the kernel; see genlab.classroom.grade).
c.Autograde.autograde_preprocessors = [
    ResilientExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    DropKernelResults,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]
c.ResilientExecute.max_output_chars = 200_000
c.LimitOutput.max_lines = 1000

# Feedback shows scores, visible checks and their messages, never the hidden tests' source.
c.GenerateFeedback.preprocessors = [HideHiddenTests, GetGrades, CSSHTMLHeaderPreprocessor]

# Students see their solutions cleared to this stub.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
