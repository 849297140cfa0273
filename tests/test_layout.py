"""The package's layout: every module says its one job in its docstring, reads in one sitting (at most 350 lines),
and has its line in docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

import emotion_lightning

PACKAGE = Path(emotion_lightning.__file__).parent
MODULES = sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__main__.py")
MOST_LINES = 350


def test_every_module_says_its_job_in_at_most_350_lines():
    too_long = {
        str(path.relative_to(PACKAGE)): n for path in MODULES if (n := len(path.read_text().splitlines())) > MOST_LINES
    }
    unsaid = [str(path.relative_to(PACKAGE)) for path in MODULES if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not too_long and not unsaid


def test_the_architecture_page_names_every_module():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = [str(path.relative_to(PACKAGE)) for path in MODULES if f"`{path.relative_to(PACKAGE)}`" not in page]
    assert not missing
