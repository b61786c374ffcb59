"""README's module map ("How it fits together") names every module of the package, and only those."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"^    ((?:hvae_detect|kernels)/\S*)")  # an entry of the map starts in column 4


def _named_in_readme() -> set[str]:
    section = (REPO / "README.md").read_text().split("## How it fits together", 1)[1]
    block = section.split("Where a change goes", 1)[0]
    named, folder = set(), None
    for line in block.splitlines():
        entry = ENTRY.match(line)
        if entry:
            path = entry.group(1)
            folder = path if path.endswith("/") else path.rsplit("/", 1)[0] + "/"
            if path.endswith(".py"):
                named.add(path)
            line = line[entry.end() :]
        elif not line.startswith(" " * 20):  # not a continuation of an entry
            folder = None
        if folder:  # the modules a folder's (or a top-level module's) entry mentions live in that folder
            named |= {folder + name for name in re.findall(r"\b(\w+\.py)\b", line)}
    return named


def _modules() -> set[str]:
    return {
        path.relative_to(REPO).as_posix()
        for root in ("hvae_detect", "kernels")
        for path in (REPO / root).rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }


def test_the_readme_map_names_every_module_and_no_other():
    named, modules = _named_in_readme(), _modules()
    assert not modules - named, f"modules missing from README's map: {sorted(modules - named)}"
    assert not named - modules, f"README's map names modules that do not exist: {sorted(named - modules)}"
