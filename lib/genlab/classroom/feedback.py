"""Feedback that teaches without leaking: hidden tests are cut out before rendering.

nbgrader's feedback HTML is rendered from the autograded notebook, which holds the hidden tests
(they are put back before grading), so by default a student reads them in the feedback.
:class:`HideHiddenTests` runs first in ``GenerateFeedback.preprocessors`` (set in
``nbgrader_config.py``): in every cell with a hidden-test region it replaces the region by one
comment line, and it shortens that cell's error tracebacks (IPython quotes the failing source
lines) to ``Name: message``. The visible checks, their messages and each cell's score stay.
"""

from __future__ import annotations

from nbgrader.preprocessors import NbGraderPreprocessor

BEGIN = "BEGIN HIDDEN TESTS"
END = "END HIDDEN TESTS"
PLACEHOLDER = "# (hidden tests: run by the grader, not shown in feedback)"


def strip_hidden(source: str) -> tuple[str, bool]:
    """``source`` without its hidden-test regions (each becomes PLACEHOLDER); True if any."""
    kept, inside, found = [], False, False
    for line in source.split("\n"):
        if BEGIN in line:
            inside, found = True, True
            kept.append(PLACEHOLDER)
        elif END in line and inside:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept), found


def hidden_lines(source: str) -> list[str]:
    """The lines inside the hidden-test regions of ``source`` (for leak checks)."""
    lines, inside = [], False
    for line in source.split("\n"):
        if BEGIN in line:
            inside = True
        elif END in line:
            inside = False
        elif inside:
            lines.append(line)
    return lines


class HideHiddenTests(NbGraderPreprocessor):
    """Remove hidden-test source and tracebacks that quote it from a notebook."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        cell.source, found = strip_hidden(cell.source)
        if found:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename')}: {output.get('evalue')}"]
        return cell, resources
