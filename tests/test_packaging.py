"""Packaging: the conda environment pins exactly what pyproject.toml pins; the package's modules
import one way only."""

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_pins_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pins |= set(extra)
    assert all("==" in pin for pin in pins), "every dependency is pinned exactly"
    conda = set(re.findall(r"^\s+- ([A-Za-z0-9_.-]+==[^\s]+)$", (ROOT / "environment.yml").read_text(), re.M))
    assert conda == pins


def _package_imports() -> dict[str, set[str]]:
    """Each module of adaqpacknet and the package modules it imports (at any depth in its code)."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in (ROOT / "adaqpacknet").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                found |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def test_the_package_import_graph_has_no_cycle():
    # One import direction: a module never imports, directly or through others, a module that imports it.
    graph = _package_imports()
    assert graph["adaqpacknet.cli"] >= {"adaqpacknet.config", "adaqpacknet.runs"}  # the graph is read at all
    done, path = set(), []

    def visit(name):
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name not in done:
            path.append(name)
            for dependency in sorted(graph[name]):
                visit(dependency)
            path.pop()
            done.add(name)

    for name in sorted(graph):
        visit(name)
