"""The documentation: the generated pages are current, every relative link resolves, the front door stays short."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = {
    "runbooks": "python -m opsbook.docs > docs/runbooks.md",
    "inventory": "python -m opsbook.docs inventory > docs/inventory.md",
}
# One process renders both pages, as `python -m opsbook.docs` does, and says which top-level packages it imported.
RENDER = """
import json, sys
from opsbook import docs
pages = {name: render() for name, render in docs.PAGES.items()}
print(json.dumps({"pages": pages, "imported": sorted({m.split(".")[0] for m in sys.modules})}))
"""


@pytest.fixture(scope="module")
def rendered() -> dict:
    out = subprocess.run([sys.executable, "-c", RENDER], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.parametrize("page", sorted(REGENERATE))
def test_generated_page_is_current(rendered: dict, page: str) -> None:
    path = ROOT / "docs" / f"{page}.md"
    committed = path.read_text(encoding="utf-8") if path.exists() else ""
    assert committed == rendered["pages"][page], (
        f"docs/{page}.md is not what the code says: regenerate it with `{REGENERATE[page]}` (from the repository root, "
        f"in the venv) and commit it")


def test_the_generator_needs_neither_sandbox_nor_bench(rendered: dict) -> None:
    assert not {"sandbox", "bench", "moto"} & set(rendered["imported"])


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL, or a heading of this page
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to files that do not exist: {broken}"


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines (at most 200): the reference belongs in docs/"
    assert "make test" in "\n".join(lines) and "make demo" in "\n".join(lines)


@pytest.mark.parametrize("guide", ["add-a-runbook.md", "add-a-system.md"])
def test_guides_have_at_most_ten_steps(guide: str) -> None:
    steps = re.findall(r"^(\d+)\. ", (ROOT / "docs" / guide).read_text(encoding="utf-8"), flags=re.M)
    assert 0 < len(steps) <= 10, f"docs/{guide} has {len(steps)} numbered steps (at most 10)"
