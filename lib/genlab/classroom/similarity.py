"""Similarity between submissions: which students' answers share code, and whose answers retype
the course's own reference code.

The method is MOSS's (Schleimer, Wilkerson and Aiken 2003, "Winnowing"):

1. **Normalise.** Each answer cell is read as Python tokens. Comments, docstrings and layout are
   dropped; every local name becomes ``V``, every string ``S`` and every number ``N``. Keywords,
   operators, builtins, attribute names (``.softplus``) and the array libraries' names (``jnp``)
   are kept: they are the structure of the code. Renaming variables, changing comments or
   literals, or reordering functions does not change what is left.
2. **Fingerprint.** Hash every run of :data:`K` consecutive tokens; in every window of
   :data:`WINDOW` consecutive hashes keep the smallest (winnowing), so any shared run of at least
   ``K + WINDOW - 1`` tokens is guaranteed to give a shared fingerprint.
3. **Discount what is not evidence.** Fingerprints of the release's own answer cells (the given
   signature and docstring) are removed, and fingerprints that more than :data:`COMMON_SHARE`
   of the class (or :data:`MAX_HOLDERS` students) share are ignored; the rest weigh
   ``log(N / count)``, so a
   fragment two students share weighs more than one ten share.
4. **Score a pair** by the weight of the fingerprints both hold over the smaller side's weight;
   flag it when the score is at least :data:`THRESHOLD` and the shared fingerprints cover at
   least :data:`MIN_SHARED` of them (short answers that everyone writes alike are not a copy).

Each submission is also compared, exercise by exercise, with the course's reference code: the
solution notebook's answer and the reference function in ``genlab`` of the same name. Code the
class holds in common (step 3) is no evidence there either: many students writing the textbook
training step are not copying it.

``similarity(root, chapter)`` writes ``reports/CH-similarity.csv`` (every pair with a score above
zero, flagged first) and ``reports/CH-similarity.html`` (the flagged pairs' matched lines side by
side), and adds the flags to the class report ``reports/CH.csv`` when grading has written it. A
flag is a reason to look, never a verdict: the instructor reads the two answers.
"""

from __future__ import annotations

import builtins
import csv
import hashlib
import html
import inspect
import io
import keyword
import math
import tokenize
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

K = 10
"""Tokens per hashed run (k-gram)."""
WINDOW = 6
"""Hashes per winnowing window: a shared run of K + WINDOW - 1 = 15 tokens always matches."""
COMMON_SHARE = 0.25
MAX_HOLDERS = 10
"""Fingerprints held by more than this share of the class, or by more than MAX_HOLDERS students
(MOSS's default), are ignored; a fingerprint two students hold always counts."""
THRESHOLD = 0.8
"""A pair is flagged at this score (the weighted share of the smaller side's fingerprints). In the
test class a whole copy with renamed variables, reordered functions and new comments scores 0.97;
two honest students who chose the same textbook style in all ten exercises of chapter 00 0.63."""
MIN_SHARED = 8
"""...and only when it shares at least this many fingerprints (about 60 tokens or more)."""

KEPT_NAMES = frozenset(
    {"jnp", "np", "jax", "lax", "nnx", "optax", "random", "numpy", "math", "functools", "self"}
)
_BUILTINS = frozenset(dir(builtins))
_TOKEN_NAME = tokenize.tok_name
_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}  # fmt: skip


@dataclass
class Document:
    """One student's (or the reference's) answers: per cell, its source and fingerprints.

    ``prints[cell]`` maps a fingerprint to the source lines (1-based) of the run it hashes.
    """

    owner: str
    sources: dict[str, str] = field(default_factory=dict)
    prints: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)

    def all_prints(self) -> set[int]:
        return {h for cell in self.prints.values() for h in cell}


def normalised_tokens(source: str) -> list[tuple[str, int]]:
    """``(token, line)`` pairs of ``source`` after normalisation (module docstring, step 1).

    Cells that do not tokenize (a student's syntax error) keep the tokens read before the error.
    """
    out: list[tuple[str, int]] = []
    previous = ""
    at_statement_start = True
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in _SKIPPED:
                if tok.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                    at_statement_start = True
                continue
            if tok.type == tokenize.STRING and at_statement_start:
                continue  # a docstring or a bare string statement
            at_statement_start = False
            text = tok.string
            if tok.type == tokenize.NAME:
                keep = keyword.iskeyword(text) or text in _BUILTINS or text in KEPT_NAMES
                text = text if keep or previous == "." else "V"
            elif tok.type == tokenize.STRING or _TOKEN_NAME[tok.type] == "FSTRING_START":
                text = "S"
            elif _TOKEN_NAME[tok.type].startswith("FSTRING"):
                continue  # Python 3.12+: an f-string's inside counts as its one "S"
            elif tok.type == tokenize.NUMBER:
                text = "N"
            elif tok.type == tokenize.OP and text == "#":
                continue
            out.append((text, tok.start[0]))
            previous = tok.string
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def _hash(tokens: list[str]) -> int:
    digest = hashlib.blake2b("\x1f".join(tokens).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def fingerprints(source: str) -> dict[int, tuple[int, int]]:
    """Winnowed fingerprints of ``source``: ``{hash: (first line, last line)}`` (step 2)."""
    tokens = normalised_tokens(source)
    if len(tokens) < K:
        return {}
    grams = [
        (_hash([t for t, _ in tokens[i : i + K]]), tokens[i][1], tokens[i + K - 1][1])
        for i in range(len(tokens) - K + 1)
    ]
    chosen: dict[int, tuple[int, int]] = {}
    for start in range(max(1, len(grams) - WINDOW + 1)):
        window = grams[start : start + WINDOW]
        # the rightmost smallest hash, as in the paper (robust winnowing)
        low = min(range(len(window)), key=lambda i: (window[i][0], -i))
        h, first, last = window[low]
        chosen.setdefault(h, (first, last))
    return chosen


def document(owner: str, cells: dict[str, str], template: dict[str, set[int]]) -> Document:
    """Fingerprint each answer cell, less the fingerprints of the release's own cell."""
    doc = Document(owner)
    for name, source in cells.items():
        prints = fingerprints(source)
        given = template.get(name, set())
        doc.sources[name] = source
        doc.prints[name] = {h: lines for h, lines in prints.items() if h not in given}
    return doc


def answer_cells(nb, names) -> dict[str, str]:
    """``{grade_id: source}`` of a notebook's answer cells named in ``names``."""
    found = {}
    for cell in nb.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell.cell_type == "code" and grade_id in names:
            found[grade_id] = cell.source
    return found


@dataclass(frozen=True)
class Pair:
    """Two documents' shared code: ``score`` in [0, 1], ``shared`` fingerprints, ``cells`` that
    hold them."""

    a: str
    b: str
    score: float
    shared: int
    cells: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        return self.score >= THRESHOLD and self.shared >= MIN_SHARED


def holder_counts(docs: list[Document]) -> Counter:
    """How many documents hold each fingerprint."""
    return Counter(h for doc in docs for h in doc.all_prints())


def counted_limit(n: int) -> int:
    """Fingerprints held by more documents than this are common code, not evidence."""
    return max(2, min(MAX_HOLDERS, int(COMMON_SHARE * n)))


def compare_class(docs: list[Document]) -> list[Pair]:
    """Score every pair of documents that shares a counted fingerprint (step 3 and 4).

    An inverted index from fingerprint to holders makes this about linear in the class's code
    plus the number of sharing pairs, not quadratic in students.
    """
    n = len(docs)
    holders: dict[int, list[int]] = defaultdict(list)
    for i, doc in enumerate(docs):
        for h in doc.all_prints():
            holders[h].append(i)
    limit = counted_limit(n)
    weight = {h: math.log(max(n, 2) / len(who)) for h, who in holders.items() if len(who) <= limit}
    totals = [sum(weight.get(h, 0.0) for h in doc.all_prints()) for doc in docs]
    shared_weight: Counter = Counter()
    shared_count: Counter = Counter()
    for h, w in weight.items():
        who = holders[h]
        for x in range(len(who)):
            for y in range(x + 1, len(who)):
                shared_weight[who[x], who[y]] += w
                shared_count[who[x], who[y]] += 1
    pairs = []
    for (i, j), w in shared_weight.items():
        smaller = min(totals[i], totals[j])
        common = docs[i].all_prints() & docs[j].all_prints()
        cells = tuple(sorted(c for c, p in docs[i].prints.items() if common & p.keys()))
        score = w / smaller if smaller > 0 else 0.0
        pairs.append(Pair(docs[i].owner, docs[j].owner, min(score, 1.0), shared_count[i, j], cells))
    return sorted(pairs, key=lambda p: (not p.flagged, -p.score, p.a, p.b))


def compare_with_reference(doc: Document, reference: Document, common: set[int]) -> list[Pair]:
    """Per exercise, the share of a student's fingerprints (less the class's ``common`` ones)
    found in the reference's code for that exercise; flagged like a pair of students."""
    found = []
    for name, prints in doc.prints.items():
        own = prints.keys() - common
        shared = own & reference.prints.get(name, {}).keys()
        if shared:
            score = len(shared) / len(own)
            found.append(Pair(doc.owner, f"reference:{name}", score, len(shared), (name,)))
    return found


def reference_document(chapter: str, solution_nb, names, template) -> Document:
    """The course's own code for each exercise: the solution's answer cell and the genlab
    reference function of the same name (when there is one), together."""
    from genlab import probing

    cells = answer_cells(solution_nb, names)
    try:
        specs = probing.probes_for(chapter)
    except (KeyError, ValueError, ImportError):
        specs = {}
    for name in names:
        spec = specs.get(name)
        if spec is not None:
            try:
                cells[name] = cells.get(name, "") + "\n" + inspect.getsource(spec.reference)
            except (OSError, TypeError):
                pass
    return document("reference", cells, template)


@dataclass
class Report:
    """The chapter's pairs (students with each other, and each with the reference)."""

    pairs: list[Pair]
    reference: list[Pair]
    skipped: dict[str, str]
    docs: dict[str, Document]

    def flagged(self) -> list[Pair]:
        return [p for p in self.pairs + self.reference if p.flagged]


def analyse(submissions: dict[str, Path], release_nb, solution_nb, chapter: str) -> Report:
    """Fingerprint each submitted notebook (``{student: path}``) against the release's answer
    cells and compare them all."""
    names = {
        c.metadata["nbgrader"]["grade_id"]
        for c in release_nb.cells
        if c.get("metadata", {}).get("nbgrader", {}).get("solution")
    }
    template = {
        name: set(fingerprints(src)) for name, src in answer_cells(release_nb, names).items()
    }
    docs, skipped = {}, {}
    for student, path in sorted(submissions.items()):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as error:  # a corrupt submission: reported, never fatal
            skipped[student] = f"not a readable notebook ({type(error).__name__})"
            continue
        docs[student] = document(student, answer_cells(nb, names), template)
    reference = reference_document(chapter, solution_nb, names, template)
    pairs = compare_class(list(docs.values()))
    counts = holder_counts(list(docs.values()))
    common = {h for h, n in counts.items() if n > counted_limit(len(docs))}
    against = [p for doc in docs.values() for p in compare_with_reference(doc, reference, common)]
    against.sort(key=lambda p: (not p.flagged, -p.score, p.a, p.b))
    docs["reference"] = reference
    return Report(pairs, against, skipped, docs)


def flags_by_student(report: Report) -> dict[str, list[str]]:
    """The class report's flags: for each student in a flagged pair, whom or what they share
    code with (``reports/CH-similarity.html`` shows where)."""
    flags: dict[str, list[str]] = defaultdict(list)
    for p in report.flagged():
        cells = ", ".join(p.cells)
        if p.b.startswith("reference:"):
            flags[p.a].append(f"answer retypes the course's reference code ({cells})")
        else:
            for one, other in ((p.a, p.b), (p.b, p.a)):
                flags[one].append(f"answers share code with {other} (similarity {p.score:.2f})")
    return dict(flags)


SIMILARITY_FLAGS = ("answers share code with ", "answer retypes the course's reference code")


def mark_class_report(report: Report, path: Path) -> int:
    """Put :func:`flags_by_student` into the class report's ``flags`` column (``reports/CH.csv``,
    written by grading), replacing the flags of an earlier similarity run and keeping the rest.
    Returns the number of students flagged; a missing report is left alone (0)."""
    if not path.exists():
        return 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames or [], list(reader)
    shared = flags_by_student(report)
    for row in rows:
        kept = [f for f in row["flags"].split(" | ") if f and not f.startswith(SIMILARITY_FLAGS)]
        row["flags"] = " | ".join(kept + shared.get(row["student"], []))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)
    return sum(1 for row in rows if row["student"] in shared)


def write_csv(report: Report, path: Path) -> Path:
    """Every scored pair, flagged first: student_a, student_b, score, shared, flagged, cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["student_a", "student_b", "score", "shared_fingerprints", "flagged", "cells"])
        for p in sorted(report.pairs + report.reference, key=lambda p: (not p.flagged, -p.score)):
            out.writerow([p.a, p.b, f"{p.score:.3f}", p.shared, "yes" if p.flagged else "no",
                          " ".join(p.cells)])  # fmt: skip
        for student, why in sorted(report.skipped.items()):
            out.writerow([student, "", "", "", "skipped", why])
    return path


def _marked_lines(doc: Document, cell: str, common: set[int]) -> set[int]:
    lines = set()
    for h, (first, last) in doc.prints.get(cell, {}).items():
        if h in common:
            lines.update(range(first, last + 1))
    return lines


def _side(doc: Document, cell: str, common: set[int]) -> str:
    marked = _marked_lines(doc, cell, common)
    rows = []
    for number, line in enumerate(doc.sources.get(cell, "").splitlines(), start=1):
        css = ' class="m"' if number in marked else ""
        rows.append(f"<span{css}>{html.escape(line) or ' '}</span>")
    return "<pre>" + "\n".join(rows) + "</pre>"


def write_html(report: Report, path: Path, chapter: str) -> Path:
    """The flagged pairs, each answer cell side by side with the matched lines highlighted."""
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(chapter)}: similarity</title>",
        "<style>body{font-family:sans-serif} pre{background:#f6f6f6;padding:6px;margin:0}"
        " .m{background:#ffd54f} td{vertical-align:top;width:50%} table{width:100%}</style>",
        f"<h1>{html.escape(chapter)}: answers that share code</h1>",
        f"<p>Flagged at score &ge; {THRESHOLD} with &ge; {MIN_SHARED} shared fingerprints "
        "(normalised tokens, winnowed).",
        "A flag is a reason to read both answers, not a verdict.</p>",
    ]
    flagged = report.flagged()
    if not flagged:
        parts.append("<p>No pair is flagged.</p>")
    for p in flagged:
        left = report.docs[p.a]
        right = report.docs["reference" if p.b.startswith("reference:") else p.b]
        common = left.all_prints() & right.all_prints()
        parts.append(f"<h2>{html.escape(p.a)} and {html.escape(p.b)}: score {p.score:.2f}, "
                     f"{p.shared} shared fingerprints</h2>")  # fmt: skip
        for cell in p.cells:
            parts.append(f"<h3>{html.escape(cell)}</h3><table><tr>"
                         f"<td>{_side(left, cell, common)}</td>"
                         f"<td>{_side(right, cell, common)}</td></tr></table>")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def similarity(root: Path, chapter: str) -> Report:
    """Compare the submissions in ``root/submitted/*/CH`` with each other and the reference;
    write ``reports/CH-similarity.csv`` and ``.html``; return the report."""
    root = Path(root)
    release = root / "chapters" / chapter / f"{chapter}.ipynb"
    solution = root / "solutions" / chapter / f"{chapter}.ipynb"
    if not release.exists() or not solution.exists():
        raise FileNotFoundError(f"{chapter}: no release or solution notebook under {root}")
    submissions = {
        p.parent.parent.name: p for p in sorted(root.glob(f"submitted/*/{chapter}/{chapter}.ipynb"))
    }
    report = analyse(
        submissions,
        nbformat.read(release, as_version=4),
        nbformat.read(solution, as_version=4),
        chapter,
    )
    write_csv(report, root / "reports" / f"{chapter}-similarity.csv")
    write_html(report, root / "reports" / f"{chapter}-similarity.html", chapter)
    mark_class_report(report, root / "reports" / f"{chapter}.csv")
    return report
