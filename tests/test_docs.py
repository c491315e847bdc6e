"""The README and the documentation site: the README stays short and its links resolve; the params page and the
module map cannot drift from the schema and the tree. (`make test` builds the site with `mkdocs build --strict`,
which checks the links and anchors of docs/ itself; MkDocs never reads the README.)"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, dvc

from wgan import config
from wgan.config.messages import allowed_text

README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)
NUMBER = re.compile(r"\d+(?:\.\d+)?")
CURRENT = "## Current numbers"  # the table each measurement page opens with


def _prose(text: str) -> str:
    """Markdown without its fenced code blocks (a `#` there is a comment, a `[x](y)` is code)."""
    return FENCE.sub("", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lowercased, punctuation but `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The #anchors of a Markdown file's headings (GitHub numbers repeats: x, x-1, ...)."""
    found: set[str] = set()
    for heading in HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
        slug = n = github_slug(heading)
        for i in range(1, 100):
            if n not in found:
                break
            n = f"{slug}-{i}"
        found.add(n)
    return found


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(path.read_text(encoding="utf-8"))) if not re.match(r"[a-z]+:", t)]


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the detail to docs/ (at most ~200)"


def test_every_relative_link_and_anchor_of_the_readme_resolves() -> None:
    links = relative_links(README)
    assert any(link.startswith("docs/") for link in links)  # the parser sees the README's links at all
    for link in links:
        target, _, anchor = link.partition("#")
        file = (README.parent / target).resolve() if target else README
        assert file.exists(), f"README.md links to {link}, which does not exist"
        if anchor:
            assert file.suffix == ".md", f"README.md links to #{anchor} in {target}, which has no headings"
            assert anchor in anchors(file), f"README.md links to {link}: no heading of {target or 'README.md'} has it"


def test_headings_get_the_same_anchor_on_github_and_on_the_site() -> None:
    """A link into docs/ from the README is followed on GitHub; the same link inside the site, by MkDocs."""
    toc = pytest.importorskip("markdown.extensions.toc")  # a dev dependency, through mkdocs
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for heading in HEADING.findall(_prose(page.read_text(encoding="utf-8"))):
            text = re.sub(r"[`*]", "", re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading))
            assert github_slug(heading) == toc.slugify(text, "-"), f"{page.name}: {heading!r} has two anchors"


def _params_rows() -> dict[str, tuple[object, str]]:
    """`section.key` -> (default, allowed) from the tables of docs/params.md."""
    rows = {}
    for line in (DOCS / "params.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`\w+\.\w+`", cells[0]):
            assert cells[0].strip("`") not in rows, f"{cells[0]} is listed twice in docs/params.md"
            rows[cells[0].strip("`")] = (yaml.safe_load(cells[1].strip("`")), cells[2])
    return rows


def _schema() -> dict[str, tuple[object, str]]:
    """`section.key` -> (default, what the error message says is allowed), from the config schema."""
    out = {}
    for name, cls in config.SECTIONS.items():
        defaults = config.to_dict(cls())
        for field in dataclasses.fields(cls):
            out[f"{name}.{field.name}"] = (defaults[field.name], allowed_text(name, field.name))
    return out


def test_the_params_page_lists_every_key_with_its_default_and_range() -> None:
    rows, schema = _params_rows(), _schema()
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    in_yaml = {f"{section}.{key}": value for section, keys in params.items() for key, value in keys.items()}
    assert set(rows) == set(schema) == set(in_yaml), "docs/params.md, the schema and params.yaml list other keys"
    for key, (default, allowed) in rows.items():
        assert default == schema[key][0] == in_yaml[key], f"{key}: the default differs in docs/params.md"
        assert allowed == schema[key][1], f"{key}: docs/params.md says {allowed!r}, the schema {schema[key][1]!r}"


def test_the_module_map_names_every_module_of_the_library() -> None:
    src = REPO / "src" / "wgan"
    modules = {p.relative_to(src).as_posix() for p in src.rglob("*.py") if p.read_text(encoding="utf-8").strip()}
    modules -= {"__init__.py"}  # the package's docstring only
    page = (DOCS / "architecture.md").read_text(encoding="utf-8").split("## Module map")[1].split("\n## ")[0]
    mapped = set(re.findall(r"^\| `([\w/]+\.py)` \|", page, re.M))
    assert mapped == modules, f"docs/architecture.md's module map: missing {modules - mapped}, stale {mapped - modules}"


@pytest.mark.slow
def test_the_stage_graph_shown_is_what_dvc_dag_prints() -> None:
    """The README and the pipeline page show `dvc dag --mermaid`, not a drawing: a new stage or dep shows up."""
    graph = dvc(REPO, "dag", "--mermaid").stdout.strip()
    for page in (README, DOCS / "pipeline.md"):
        blocks = re.findall(r"^```mermaid\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S)
        assert [b.strip() for b in blocks] == [graph], f"{page.name}: paste the output of `dvc dag --mermaid`"


def _table(text: str, heading: str) -> list[list[str]]:
    """The body rows (cells, emphasis dropped) of the first table after ``heading``."""
    lines = _prose(text).split(f"\n{heading}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = [line.strip().strip("|").split("|") for line in lines[start + 2 : end]]  # after the header and ---
    return [[cell.replace("**", "").strip() for cell in row] for row in rows]


@pytest.mark.parametrize("page", ["results.md", "benchmarks.md"])
def test_the_measurement_pages_open_with_the_current_numbers(page: str) -> None:
    """Today's numbers first, each with its date, machine, commit and section; the dated log follows."""
    text = _prose((DOCS / page).read_text(encoding="utf-8"))
    assert re.findall(r"^## .*", text, re.M)[0] == CURRENT, f"{page}: open with the {CURRENT!r} table"
    assert text.index(CURRENT) < text.index("\n|"), f"{page}: no table may come before {CURRENT!r}"
    page_anchors = anchors(DOCS / page)
    for row in _table(text, CURRENT):
        line = " | ".join(row)
        assert re.search(r"\b2026-\d\d-\d\d\b", line), f"{page}: {row[0]!r} has no date"
        assert re.search(r"\b[0-9a-f]{7}\b", line), f"{page}: {row[0]!r} names no commit"
        links = re.findall(r"\]\(#([\w-]+)\)", line)
        assert links and set(links) <= page_anchors, f"{page}: {row[0]!r} links to no section of the page"


def test_the_readme_recipes_quote_the_current_results() -> None:
    """Every number of the README's recipe table is in the same recipe's row of docs/results.md's current table."""
    current = {row[0]: row for row in _table((DOCS / "results.md").read_text(encoding="utf-8"), CURRENT)}
    readme = _table(README.read_text(encoding="utf-8"), "## Recipes")
    assert len(readme) >= 3
    for row in readme:
        assert row[0] in current, f"README's recipe {row[0]!r} has no row in docs/results.md's current numbers"
        missing = [n for n in NUMBER.findall(" ".join(row)) if n not in NUMBER.findall(" ".join(current[row[0]]))]
        assert not missing, f"README's {row[0]!r}: {missing} not in docs/results.md's current numbers"
