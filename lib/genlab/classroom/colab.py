"""The "Open in Colab" link of a chapter, built from the one repository URL in pyproject.toml."""

from __future__ import annotations

from genlab import runtime

BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


def colab_url(chapter: str, notebook: str | None = None, branch: str = "main") -> str:
    """Colab's address for ``chapters/CH/NOTEBOOK.ipynb`` of the course repository on GitHub."""
    repo = runtime.repository_url().rstrip("/")
    if not repo.startswith("https://github.com/"):
        raise ValueError(f"Colab opens notebooks from GitHub; the repository is {repo}")
    path = repo.removeprefix("https://github.com/").removesuffix(".git")
    name = f"{notebook or chapter}.ipynb"
    return (
        f"https://colab.research.google.com/github/{path}/blob/{branch}/chapters/{chapter}/{name}"
    )


def colab_badge(chapter: str, notebook: str | None = None) -> str:
    """The Markdown badge: ``[![Open In Colab](badge.svg)](colab_url)``."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(chapter, notebook)})"
