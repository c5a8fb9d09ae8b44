"""The README and docs/: short front page, links that resolve, commands that exist."""

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for line in page.read_text().splitlines():
        if line.startswith("#") and not line.startswith("#!"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def _outside_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.DOTALL)


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines"
    assert (
        lines[0].startswith("# ")
        and "make demo" in "\n".join(lines[:15])
        and "make test" in "\n".join(lines[:15])
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_image_resolves(page):
    targets = LINK.findall(_outside_code(page.read_text()))
    for target in targets:
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(resolved), f"{page.name}: no heading for #{anchor} in {resolved.name}"


def _readme_commands() -> list[list[str]]:
    """The shell commands of the README's sh blocks, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split(" # ")[0].strip().lstrip("!")
            if line and not line.startswith("#"):
                commands.append(shlex.split(line.replace("&&", ";").split(";")[-1]))
    return commands


def test_the_readme_commands_name_targets_and_modules_that_exist():
    checked = set()
    for words in _readme_commands():
        if words[0] == "make":
            target = next(w for w in words[1:] if "=" not in w)
            variables = [w for w in words[1:] if "=" in w]
            result = subprocess.run(
                ["make", "-n", target, *variables], cwd=REPO, capture_output=True, text=True
            )
            assert result.returncode == 0, f"make -n {target}: {result.stderr[-500:]}"
            checked.add(f"make {target}")
        elif "-m" in words:
            module = words[words.index("-m") + 1]
            command = words[words.index("-m") + 2 : words.index("-m") + 3]
            subcommand = command if command and not command[0].startswith("-") else []
            result = subprocess.run(
                [sys.executable, "-m", module, *subcommand, "--help"],
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, f"python -m {module} {subcommand} --help: {result.stderr[-500:]}"
            checked.add(f"python -m {module}")
        for word in words:
            path = word.partition("=")[2] or word
            if path.endswith((".py", ".yaml")):
                assert (REPO / path).is_file(), word
    assert {"make demo", "make test", "make shards", "make train", "make eval", "python -m eval"} <= checked


def test_the_readme_python_examples_import_what_exists():
    text = (REPO / "README.md").read_text()
    imports = re.findall(r"^(?:from \S+ import .+|import \S+)$", text, flags=re.MULTILINE)
    assert len(imports) >= 3
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(imports)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_code_map_lists_every_module_and_nothing_else():
    text = (REPO / "docs" / "design.md").read_text()
    section = text.split("## Code map", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", section, flags=re.MULTILINE))
    modules = {
        str(path.relative_to(REPO))
        for package in ("shards", "pipeline", "train", "eval")
        for path in (REPO / package).rglob("*.py")
        if path.name != "__init__.py"
    }
    assert listed == modules, f"missing: {sorted(modules - listed)}, gone: {sorted(listed - modules)}"


# What each floor may import (design.md, "Code map"): shards at the bottom, pipeline and train on it,
# eval above both; the benchmarks on top, sharing only loopback/ (the development servers) with the
# tests, which may also run a benchmark.
FLOORS = {
    "shards": {"shards"},
    "pipeline": {"shards", "pipeline"},
    "train": {"shards", "train"},
    "eval": {"shards", "pipeline", "train", "eval"},
    "loopback": {"loopback"},
    "bench": {"shards", "pipeline", "train", "eval", "loopback", "bench"},
    "tests": {"shards", "pipeline", "train", "eval", "loopback", "bench", "tests"},
}


def _project_imports(path: Path) -> set[str]:
    """The project's top-level packages that ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(FLOORS)


def test_no_import_runs_back_up_a_floor():
    wrong = [
        f"{path.relative_to(REPO)} imports {sorted(imported - allowed)}"
        for floor, allowed in FLOORS.items()
        for path in sorted((REPO / floor).rglob("*.py"))
        if (imported := _project_imports(path)) - allowed
    ]
    assert not wrong, "\n".join(wrong)
