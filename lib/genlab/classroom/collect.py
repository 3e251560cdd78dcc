"""Collecting submissions from an LMS download: whose file is it, when was it handed in.

Three naming styles are read, each with its submission time (``STYLES``):

- **Blackboard**: ``<assignment>_<id>_attempt_<YYYY-MM-DD-HH-MM-SS>_<file>``; the time is in the
  name. The assignment name may hold underscores too, so the id is the longest ending of what
  precedes ``_attempt_`` that is a known student (the roster), else what follows the chapter's
  name when the assignment is named after the chapter; otherwise the file is not matched.
- **Canvas**: ``<name>[_LATE]_<user number>_<submission number>_<file>`` (Canvas may add ``-1``,
  ``-2``... to a resubmitted file's name); the id is the roster entry equal to the name or the
  user number, else the name. The time is the zip entry's date, which Canvas sets to the upload.
- **Moodle**: a folder ``<Full Name>_<participant number>_assignsubmission_file_/<file>``; the id
  is the roster entry equal to the participant number or to the full name (spaces as ``_``, any
  case), else the participant number. The time is the zip entry's date.

LMS times carry no time zone: they are read in ``tz`` (the LMS's, default UTC). Files that match
no style, or whose notebook is not one of the chapter's, are returned as ``unmatched`` with the
reason; the caller lists them. A student's latest attempt wins.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"  # nbgrader's timestamp.txt, read by nbgrader.utils.parse_utc
BLACKBOARD = re.compile(
    r"^(?P<before>.+)_attempt_(?P<time>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})_(?P<file>[^/]+)$"
)
CANVAS = re.compile(r"^(?P<name>[^/]+?)(?:_LATE)?_(?P<user>\d+)_(?P<number>\d+)_(?P<file>[^/]+)$")
MOODLE = re.compile(r"^(?P<name>[^/]+)_(?P<number>\d+)_assignsubmission_file_/(?P<file>[^/]+)$")
STYLES = ("Blackboard", "Canvas", "Moodle")
RESUBMITTED = re.compile(r"^(?P<stem>.+?)-\d+(?P<suffix>\.[^.]+)$")  # Canvas: name-1.ipynb


@dataclass
class Entry:
    """One collected file: ``member`` of the zip, stored as ``file`` for ``student``."""

    member: str
    student: str
    file: str
    time: dt.datetime
    style: str


@dataclass
class Collected:
    """What a zip holds: ``{student: [entries of their latest attempt]}`` and the files that
    matched no style, as ``(member, reason)``."""

    entries: dict[str, list[Entry]] = field(default_factory=dict)
    unmatched: list[tuple[str, str]] = field(default_factory=list)


def _match_id(candidates: list[str], roster: set[str]) -> str | None:
    return next((c for c in candidates if c in roster), None)


def _blackboard(m, chapter: str, roster: set[str], tz) -> tuple[str, dt.datetime] | str:
    before = m["before"]
    parts = before.split("_")
    endings = ["_".join(parts[i:]) for i in range(1, len(parts))]  # longest first
    student = _match_id(endings, roster)
    if student is None and before.startswith(chapter + "_"):
        student = before[len(chapter) + 1 :]
    if student is None:
        return (f"cannot tell the assignment name from the student id in {before!r}: name the "
                "assignment after the chapter, or list the student in the roster")  # fmt: skip
    time = dt.datetime.strptime(m["time"], "%Y-%m-%d-%H-%M-%S").replace(tzinfo=tz)
    return student, time


def _canvas(m, roster: set[str]) -> str:
    return _match_id([m["name"], m["user"]], roster) or m["name"]


def _moodle(m, roster: set[str]) -> str:
    folded = {r.lower(): r for r in roster}
    name = m["name"].replace(" ", "_").lower()
    return _match_id([m["number"]], roster) or folded.get(name) or m["number"]


def _notebook_name(file: str, notebooks: set[str]) -> str | None:
    """The release's name of a submitted file (Canvas's ``-1`` suffix removed), or None."""
    if file in notebooks:
        return file
    again = RESUBMITTED.match(file)
    if again and again["stem"] + again["suffix"] in notebooks:
        return again["stem"] + again["suffix"]
    return None


def read_zip(path: Path, chapter: str, notebooks: set[str], roster=(), tz: str = "UTC",
             check_id=lambda s: s) -> Collected:  # fmt: skip
    """Sort the files of the LMS zip ``path`` by student (see the module docstring).

    ``notebooks``: the chapter's file names; ``roster``: the known student ids; ``check_id``
    raises ValueError for an id that cannot be one (the reason goes to ``unmatched``).
    """
    zone, roster = ZoneInfo(tz), set(roster)
    result, attempts = Collected(), {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            member = info.filename
            entry_time = dt.datetime(*info.date_time, tzinfo=zone)
            if m := BLACKBOARD.match(member.rsplit("/", 1)[-1]):
                found, style, file = _blackboard(m, chapter, roster, zone), "Blackboard", m["file"]
            elif m := MOODLE.search(member):
                found, style, file = (_moodle(m, roster), entry_time), "Moodle", m["file"]
            elif m := CANVAS.match(member.rsplit("/", 1)[-1]):
                found, style, file = (_canvas(m, roster), entry_time), "Canvas", m["file"]
            else:
                result.unmatched.append((member, "matches no LMS naming style ("
                                         + ", ".join(STYLES) + ")"))  # fmt: skip
                continue
            if isinstance(found, str):
                result.unmatched.append((member, found))
                continue
            student, time = found
            try:
                check_id(student)
            except ValueError as error:
                result.unmatched.append((member, str(error)))
                continue
            name = _notebook_name(file, notebooks)
            if name is None:
                result.unmatched.append((member, f"{file!r} is not a notebook of {chapter} "
                                                 f"({', '.join(sorted(notebooks))})"))  # fmt: skip
                continue
            entry = Entry(member, student, name, time, style)
            attempts.setdefault(student, {}).setdefault(time, []).append(entry)
    for student, by_time in sorted(attempts.items()):
        result.entries[student] = by_time[max(by_time)]
    return result


def folder_digest(folder: Path) -> str:
    """A digest of the regular files under ``folder`` (names and bytes), "" when it is absent."""
    if not folder.is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def write_timestamp(folder: Path, time: dt.datetime) -> None:
    """nbgrader's ``timestamp.txt`` (UTC), which grading carries into the gradebook."""
    utc = time.astimezone(dt.timezone.utc)
    (folder / "timestamp.txt").write_text(utc.strftime(TIME_FORMAT) + "\n", encoding="utf-8")
