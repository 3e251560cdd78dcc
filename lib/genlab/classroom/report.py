"""The class report: one row per student and chapter with the score, the reasons for lost or
odd points (timeouts, a dead kernel, restored or duplicated cells, an unreadable file, truncated
output, a changed submission, a manual score, no sandbox) and the flags: the integrity scan's,
the probes' (the reference was called while graded) and answers that are the library's
reference copied."""

from __future__ import annotations

import ast
import csv
import inspect
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from genlab.classroom.execute import DEAD_ENAME, PROCESS_LIMIT_ENAME, TIMEOUT_ENAME, TRUNCATED_NOTE
from genlab.classroom.grading import TEST_PREFIX, challenge_names
from genlab.classroom.scan import scan_notebook
from genlab.probing import NO_RECORDS

TRUNCATED_MARK = TRUNCATED_NOTE.split("{")[0]


@dataclass
class Row:
    student: str
    chapter: str
    score: float
    max_score: float
    status: str  # "graded" or "failed"
    bonus: float = 0.0  # points from challenge exercises, included in score, not in max_score
    reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _grade_id(cell, index: int) -> str:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or f"cell {index}"


def submission_problems(path: Path, expected_ids: set[str]) -> list[str]:
    """What is wrong with a submitted notebook file before it is run."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        nb = nbformat.from_dict(raw)
        nbformat.validate(nb)
    except FileNotFoundError:
        return [f"{path.name} is missing from the submission"]
    except Exception as error:  # JSON or schema error: say which, briefly
        message = str(error).splitlines()[0][:120]
        return [f"{path.name} is not a readable notebook ({type(error).__name__}: {message})"]
    ids = [
        c["metadata"]["nbgrader"]["grade_id"]
        for c in nb.cells
        if "grade_id" in c.get("metadata", {}).get("nbgrader", {})
    ]
    problems = []
    missing = sorted(expected_ids - set(ids))
    if missing:
        problems.append("deleted cells restored from the release: " + ", ".join(missing))
    duplicated = sorted(name for name, n in Counter(ids).items() if n > 1)
    if duplicated:
        problems.append("duplicated cells dropped: " + ", ".join(duplicated))
    return problems


def execution_problems(path: Path) -> list[str]:
    """Timeouts, dead kernels, memory and process limits, a full scratch disk and truncated
    output in an autograded notebook."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:
        return []
    problems = []
    for index, cell in enumerate(nb.cells):
        where = _grade_id(cell, index)
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "error" and output.get("ename") == TIMEOUT_ENAME:
                problems.append(f"{where}: cell time limit exceeded (kernel restarted)")
            elif kind == "error" and output.get("ename") == DEAD_ENAME:
                problems.append(f"{where}: the kernel died (exit or crash; restarted)")
            elif kind == "error" and output.get("ename") == "MemoryError":
                problems.append(f"{where}: memory limit exceeded (MemoryError)")
            elif kind == "error" and output.get("ename") == PROCESS_LIMIT_ENAME:
                problems.append(f"{where}: process limit reached (a fork failed; kernel restarted)")
            elif kind == "error" and "No space left on device" in str(output.get("evalue")):
                problems.append(f"{where}: scratch disk full (No space left on device)")
            elif kind == "stream" and TRUNCATED_MARK in output.get("text", ""):
                problems.append(f"{where}: output truncated")
    return problems


def kernel_errors(path: Path) -> list[tuple[str, str | None, str, str]]:
    """Every error output of an autograded notebook, in order: ``(where, grade_id, ename,
    evalue)``; ``where`` is the grade_id, or "cell N (its first line)"."""
    try:
        if path.is_symlink() or path.stat().st_size > 64 << 20:
            return []
        nb = nbformat.read(path, as_version=4)
    except Exception:
        return []
    errors = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                first = (str(cell.source).strip().splitlines() or [""])[0][:50]
                where = grade_id or f"cell {index} ({first})"
                errors.append((where, grade_id, str(output.get("ename")),
                               str(output.get("evalue"))[:500]))  # fmt: skip
    return errors


def missing_records_reason(unrecorded: list[str], errors) -> str:
    """The reason of a row whose test cells ``unrecorded`` left no probe records: each cell's
    own error, and the kernel's first error verbatim (often the real cause)."""
    own = {grade_id: ename for _, grade_id, ename, _ in errors if grade_id}
    cells = ", ".join(f"{c} ({own[c]})" if c in own else c for c in unrecorded)
    text = f"no probe records (the test cell stopped before its probe): {cells}"
    if errors:
        where, _, ename, evalue = errors[0]
        message = (evalue.splitlines() or [""])[0][:200]
        text += f"; the kernel's first error: {ename} in {where}"
        text += f": {message}" if message else ""
    return text


def cell_scores(gradebook: Path, chapter: str, student: str) -> dict[str, tuple]:
    """``{grade_id: (score, max_score)}`` over every notebook of the student's submission."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{Path(gradebook).resolve()}") as gb:
        try:
            submission = gb.find_submission(chapter, student)
        except MissingEntry:
            return {}
        return {
            g.name: (float(g.score or 0.0), float(g.max_score))
            for nb in submission.notebooks
            for g in nb.grades
        }


def _read_release(path: Path):
    try:
        return nbformat.read(path, as_version=4)
    except Exception:
        return None


def _code_sources(nb) -> set[str]:
    return set() if nb is None else {c.source for c in nb.cells if c.cell_type == "code"}


def _bonus_cells(nb) -> set[str]:
    return set() if nb is None else {TEST_PREFIX + n for n in challenge_names(nb)}


def _body_dump(node) -> str:
    """The AST of a def/class without docstrings and decorators, for comparing implementations."""
    node = ast.parse(ast.unparse(node)).body[0]
    for sub in ast.walk(node):
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            sub.decorator_list = []
            body = sub.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                sub.body = body[1:] or [ast.Pass()]
    return ast.dump(node, annotate_fields=False)


def _copied(answer: ast.AST, reference: ast.AST) -> bool:
    """True when ``answer`` (a def or class) is the library's ``reference`` pasted in: it carries
    the reference's own docstring, or the reference's code including its input validation
    (``raise`` statements a notebook answer has no reason to reproduce word for word)."""
    docstring = ast.get_docstring(reference)
    if docstring and ast.get_docstring(answer) == docstring:
        return True
    validates = any(isinstance(n, ast.Raise) for n in ast.walk(reference))
    return validates and _body_dump(answer) == _body_dump(reference)


def reference_copies(path: Path, chapter: str) -> list[str]:
    """Answers in the notebook at ``path`` that are the library's reference, copied.

    Writing the same few lines as the reference by chance is easy, so the same code alone is
    not enough (see :func:`_copied`).
    """
    from genlab.probing import probes_for

    try:
        nb = nbformat.read(path, as_version=4)
        specs = probes_for(chapter)
    except Exception:
        return []
    flags = []
    for cell in nb.cells:
        name = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.cell_type != "code" or name not in specs:
            continue
        try:
            reference = ast.parse(inspect.getsource(inspect.unwrap(specs[name].reference)))
            answer = ast.parse(cell.source)
        except (OSError, TypeError, SyntaxError):
            continue
        mine = [n for n in answer.body if getattr(n, "name", None) == name]
        if mine and _copied(mine[0], reference.body[0]):
            flags.append(f"{name}: the answer is the library's reference, copied")
    return flags


def build_row(layout, chapter: str, student: str, run, notebooks: dict[str, set[str]]) -> Row:
    """The report row of one graded student; ``notebooks`` maps notebook names to grade ids.

    The scan reads the graded copy of the submission (``graded/ID/CH``), not ``submitted/``.
    """
    scores = cell_scores(layout.db_path, chapter, student)
    releases = {name: _read_release(layout.root / "chapters" / chapter / f"{name}.ipynb")
                for name in notebooks}  # fmt: skip
    bonus = set().union(*map(_bonus_cells, releases.values()))
    row = Row(
        student, chapter,
        score=sum(s for s, _ in scores.values()),
        max_score=sum(m for cell, (_, m) in scores.items() if cell not in bonus),
        status="graded" if run.graded else "failed", seconds=run.seconds,
        bonus=sum(s for cell, (s, _) in scores.items() if cell in bonus),
    )  # fmt: skip
    row.reasons += run.notes
    for name, ids in notebooks.items():
        graded = layout.graded(student, chapter) / f"{name}.ipynb"
        row.reasons += submission_problems(graded, ids)
        row.reasons += execution_problems(layout.autograded(student, chapter) / f"{name}.ipynb")
        release = _code_sources(releases[name])
        row.flags += scan_notebook(graded, release or None)
        row.flags += reference_copies(graded, chapter)
    row.flags += run.flags
    row.flags += [f"{cell}: {flag}" for cell, v in sorted(run.verdicts.items()) for flag in v.flags]
    unrecorded = [cell for cell, v in sorted(run.verdicts.items()) if NO_RECORDS in v.message]
    if run.graded and unrecorded:
        errors = []
        for name in sorted(notebooks):
            errors += kernel_errors(layout.autograded(student, chapter) / f"{name}.ipynb")
        row.reasons.append(missing_records_reason(unrecorded, errors))
    if run.timed_out:
        row.reasons.append("notebook time limit exceeded: process killed, scored 0")
    elif not run.graded and not row.reasons:
        last = [
            line.strip()
            for line in run.log.splitlines()
            if ("Error" in line or "ERROR" in line) and "Please see" not in line
        ]
        row.reasons.append("nbgrader could not grade it: " + (last[-1] if last else "see log"))
    return row


def format_table(rows: list[Row]) -> str:
    """A plain-text table: student, chapter, score, status, reasons and flags."""
    header = ("student", "chapter", "score", "status", "reasons / flags")
    body = []
    for r in rows:
        notes = r.reasons + [f"FLAGGED {f}" for f in r.flags]
        body.append((r.student, r.chapter, _score_text(r), r.status,
                     "; ".join(notes) or "-"))  # fmt: skip
    widths = [max(len(str(x[i])) for x in [header, *body]) for i in range(4)]
    lines = []
    for values in [header, *body]:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(values, widths)) + "  " + values[4])
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _score_text(row: Row) -> str:
    text = f"{row.score:g}/{row.max_score:g}"
    return f"{text} (incl. {row.bonus:g} bonus)" if row.bonus else text


CSV_HEADER = ["student", "chapter", "score", "max_score", "status", "reasons", "flags"]


def write_csv(rows: list[Row], path: Path) -> None:
    """Update the report at ``path``: these students' rows are replaced, the others kept."""
    table = {}
    if path.exists():
        with open(path, newline="", encoding="utf-8") as old:
            table = {r["student"]: [r[k] for k in CSV_HEADER] for r in csv.DictReader(old)}
    for r in rows:
        table[r.student] = [r.student, r.chapter, r.score, r.max_score, r.status,
                            " | ".join(r.reasons), " | ".join(r.flags)]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_HEADER)
        for student in sorted(table):
            writer.writerow(table[student])
