"""Reading LMS downloads: every style's names, whole ids, times to the second, what is left out."""

from __future__ import annotations

import datetime as dt
import zipfile

import pytest

from genlab.classroom.collect import folder_digest, read_zip, write_timestamp
from genlab.classroom.grade import check_student_id

NOTEBOOKS = {"00_jax_primer.ipynb"}
ZIP_TIME = (
    2026,
    12,
    2,
    9,
    41,
    8,
)  # zip entries keep even seconds (DOS time): Canvas and Moodle times


def lms_zip(tmp_path, names) -> zipfile.ZipFile:
    path = tmp_path / "lms.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            z.writestr(zipfile.ZipInfo(name, ZIP_TIME), f"notebook of {name}")
    return path


def read(tmp_path, names, roster=(), tz="UTC"):
    return read_zip(lms_zip(tmp_path, names), "00_jax_primer", NOTEBOOKS, roster, tz,
                    check_student_id)  # fmt: skip


def utc(*fields):
    return dt.datetime(*fields, tzinfo=dt.timezone.utc)


def test_blackboard_times_keep_minutes_and_seconds(tmp_path):
    found = read(tmp_path, ["00_jax_primer_alice_attempt_2026-12-01-10-45-30_00_jax_primer.ipynb"])
    (entry,) = found.entries["alice"]
    assert entry.time == utc(2026, 12, 1, 10, 45, 30) and entry.style == "Blackboard"
    assert entry.file == "00_jax_primer.ipynb" and not found.unmatched


def test_blackboard_ids_with_underscores_stay_whole(tmp_path):
    names = ["00_jax_primer_bob_smith_attempt_2026-12-01-10-05-00_00_jax_primer.ipynb",
             "Week 1 Homework_carol_ann_attempt_2026-12-01-11-00-00_00_jax_primer.ipynb",
             "Week 1 Homework_dave_x_attempt_2026-12-01-11-00-00_00_jax_primer.ipynb"]  # fmt: skip
    found = read(tmp_path, names, roster={"carol_ann"})
    assert sorted(found.entries) == ["bob_smith", "carol_ann"]
    # Without the chapter's name or the roster, where the assignment ends is a guess: refused.
    ((member, reason),) = found.unmatched
    assert "dave_x" in member and "cannot tell the assignment name" in reason


def test_the_latest_attempt_wins(tmp_path):
    found = read(tmp_path, [
        "00_jax_primer_alice_attempt_2026-12-01-10-00-00_00_jax_primer.ipynb",
        "00_jax_primer_alice_attempt_2026-12-03-08-30-00_00_jax_primer.ipynb",
    ])  # fmt: skip
    (entry,) = found.entries["alice"]
    assert entry.time == utc(2026, 12, 3, 8, 30) and "2026-12-03" in entry.member


def test_canvas_names_late_marks_resubmissions_and_zip_times(tmp_path):
    found = read(tmp_path, ["smithjohn_4021_99871_00_jax_primer.ipynb",
                            "doejane_LATE_4022_99872_00_jax_primer-1.ipynb"],
                 roster={"4021"})  # fmt: skip
    assert sorted(found.entries) == ["4021", "doejane"]  # the roster's form, else the name
    (late,) = found.entries["doejane"]
    assert late.style == "Canvas" and late.file == "00_jax_primer.ipynb"
    assert late.time == utc(*ZIP_TIME)


def test_moodle_folders_match_the_roster_by_name_or_number(tmp_path):
    found = read(tmp_path, [
        "Jane Doe_3101_assignsubmission_file_/00_jax_primer.ipynb",
        "Li Wei_3102_assignsubmission_file_/00_jax_primer.ipynb",
    ], roster={"jane_doe"}, tz="Europe/Berlin")  # fmt: skip
    assert sorted(found.entries) == ["3102", "jane_doe"]
    (entry,) = found.entries["jane_doe"]
    assert entry.style == "Moodle" and entry.time == utc(2026, 12, 2, 8, 41, 8)  # Berlin = UTC+1


def test_files_that_match_nothing_are_listed_with_the_reason(tmp_path):
    found = read(tmp_path, [
        "readme.txt",
        "00_jax_primer_alice_attempt_2026-12-01-10-45-30_notes.ipynb",
        "00_jax_primer_../x_attempt_2026-12-01-10-45-30_00_jax_primer.ipynb",
    ])  # fmt: skip
    reasons = dict(found.unmatched)
    assert "matches no LMS naming style" in reasons["readme.txt"]
    assert "is not a notebook of 00_jax_primer" in reasons[
        "00_jax_primer_alice_attempt_2026-12-01-10-45-30_notes.ipynb"]  # fmt: skip
    assert len(found.unmatched) == 3 and not found.entries


def test_timestamp_file_is_utc_and_nbgrader_reads_it_back(tmp_path):
    from nbgrader.utils import parse_utc

    berlin = dt.datetime(2026, 12, 1, 10, 45, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    write_timestamp(tmp_path, berlin)
    text = (tmp_path / "timestamp.txt").read_text().strip()
    assert text == "2026-12-01 09:45:30 UTC"
    assert parse_utc(text).replace(tzinfo=dt.timezone.utc) == berlin


def test_folder_digest_sees_names_and_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "x.ipynb").write_text("same")
    assert folder_digest(a) == folder_digest(b) != folder_digest(tmp_path / "missing") == ""
    (b / "x.ipynb").write_text("changed")
    assert folder_digest(a) != folder_digest(b)


@pytest.mark.parametrize("tz", ["Mars/Olympus"])
def test_an_unknown_time_zone_is_an_error(tmp_path, tz):
    with pytest.raises(Exception, match="Mars/Olympus"):
        read(tmp_path, [], tz=tz)
