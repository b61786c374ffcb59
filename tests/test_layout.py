"""The package's layers, read from the modules' own imports: no circle, no module importing one above it,
and no module over the size a reader takes in at once."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer and the layers below it; a module's layer is
# that of the longest prefix listed here.
LAYERS = [
    [
        "hvae_detect.kernels",
        "hvae_detect.devices",
        "hvae_detect.persistence.atomic",
        "hvae_detect.precision",
        "hvae_detect.reporting",
        "hvae_detect.threads",
    ],
    ["hvae_detect.data"],
    ["hvae_detect.likelihoods"],
    ["hvae_detect.models"],
    ["hvae_detect.scoring"],
    ["hvae_detect.training"],
    ["hvae_detect.persistence"],
    ["hvae_detect.estimator", "hvae_detect.parameter_constraints", "hvae_detect.thresholds"],
    ["hvae_detect.integrations", "hvae_detect.commands"],
    ["hvae_detect.cli", "hvae_detect.__main__", "hvae_detect"],
]
MAX_LINES = 360


def _modules() -> dict[str, Path]:
    found = {}
    for root, package in ((REPO / "hvae_detect", "hvae_detect"), (REPO / "kernels", "hvae_detect.kernels")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    best = max(
        (prefix for layer in LAYERS for prefix in layer if module == prefix or module.startswith(prefix + ".")), key=len
    )
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def _imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports (at any depth of its code)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


GRAPH = {m: _imports(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(module):
    above = sorted(d for d in GRAPH[module] if _layer(d) > _layer(module) and not module.startswith(d + "."))
    assert not above, f"{module} (layer {_layer(module)}) imports {above} from a layer above"


def test_the_import_graph_has_no_circle():
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for d in sorted(GRAPH[m]):
            if m.startswith(d + "."):  # a module importing its own package's face is not a circle
                continue
            if state.get(d) == "open":
                raise AssertionError("circle: " + " -> ".join(path[path.index(d) :] + [d]))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_readable_in_one_sitting(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(REPO)} has {lines} lines (at most {MAX_LINES})"
