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


def test_the_package_sets_no_variable_of_its_own_and_a_librarys_only_where_it_has_no_call_for_it():
    """Values pass between the package's parts by calls: it writes no environment variable of its own, and a
    library's only where that library takes no argument for it, with a comment there saying so."""
    import re

    written = []
    for path in MODULES:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if match := re.search(r"environ(?:\[\"(\w+)\"\] =|\.(?:setdefault|update|pop)\(\"(\w+)\")|putenv\(", line):
                said = "has no call for it" in line or "has no call for it" in lines[number - 1]
                written.append((path.name, match[1] or match[2], said))
    assert not [entry for entry in written if entry[1] is None or entry[1].startswith("EMOTION_LIGHTNING")]
    assert all(said for *_, said in written), written
    assert {name for _, name, _ in written} == {"TOKENIZERS_PARALLELISM", "OMP_WAIT_POLICY"}
