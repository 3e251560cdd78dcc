"""Colab: every chapter notebook and the README's chapter table carry the chapter's own
"Open in Colab" badge; the notebooks' setup cell installs the course there and they say which
device they run on."""

from __future__ import annotations

import re

import nbformat

from genlab import runtime
from genlab.classroom.colab import colab_badge, colab_url

from conftest import RELEASE, ROOT, SOLUTIONS


def test_colab_url_is_built_from_the_repository_url():
    url = colab_url("00_jax_primer")
    repo = runtime.repository_url().removeprefix("https://github.com/")
    assert url == (
        f"https://colab.research.google.com/github/{repo}/blob/main/chapters/"
        "00_jax_primer/00_jax_primer.ipynb"
    )
    assert colab_badge("00_jax_primer").endswith(f"({url})")


def test_every_chapter_notebook_has_its_badge_setup_cell_and_device_line(chapter):
    for folder in (SOLUTIONS, RELEASE):
        path = folder / chapter / f"{chapter}.ipynb"
        nb = nbformat.read(path, as_version=4)
        title = nb.cells[0]
        assert title.cell_type == "markdown" and title.source.startswith("# "), path
        assert colab_badge(chapter) in title.source, f"{path}: title cell lacks its Colab badge"
        badges = re.findall(r"colab\.research\.google\.com/github/\S+?\.ipynb", title.source)
        assert len(badges) == 1, badges
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        assert code[0] == runtime.setup_cell_source(), f"{path}: first code cell is the setup"
        assert any("runtime.device_summary()" in s for s in code[:3]), f"{path}: print the device"


def test_readme_chapter_table_has_a_badge_per_released_chapter(chapter):
    readme = (ROOT / "README.md").read_text()
    if not (RELEASE / chapter).is_dir():
        return  # a chapter still in preparation has no release to open yet
    row = next((line for line in readme.splitlines() if f"chapters/{chapter}/" in line), "")
    assert colab_badge(chapter) in row, f"README's row for {chapter} lacks its Colab badge"
