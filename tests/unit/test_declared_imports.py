"""Every third-party module ``tui/`` imports is a declared dependency of ``pyproject.toml``:
imported when a module loads → a core dependency; imported only inside a function (a
backend, loaded on demand) → a core dependency or an extra, the heavy ones their own extra."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.support.checks import REPO

# Imported lazily, each needs its extra (what `pip install 'modeldeck[…]'` adds).
EXTRA_OF = {"llama_cpp": "llama", "torch": "transformers", "transformers": "transformers",
            "accelerate": "transformers"}
LOOKUPS = ("find_spec", "import_module")  # modules named as strings


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _normal(re.match(r"[A-Za-z0-9._-]+", req.strip()).group(0))


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {name: {_requirement_name(r) for r in reqs}
              for name, reqs in project["optional-dependencies"].items()}
    return core, extras


def _imports() -> dict[str, dict[str, set[str]]]:
    """Top-level module → {"eager"/"lazy": {"file:line", …}} for every non-stdlib import."""
    found: dict[str, dict[str, set[str]]] = {}

    def add(module: str, where: str, lazy: bool) -> None:
        top = module.split(".")[0]
        if top and top != "tui" and top not in sys.stdlib_module_names:
            found.setdefault(top, {"eager": set(), "lazy": set()})[
                "lazy" if lazy else "eager"].add(where)

    def visit(node: ast.AST, path: str, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            where = f"{path}:{getattr(child, 'lineno', '?')}"
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, where, lazy)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                add(child.module, where, lazy)
            elif (isinstance(child, ast.Call) and child.args
                  and isinstance(child.args[0], ast.Constant)
                  and isinstance(child.args[0].value, str)
                  and getattr(child.func, "attr", getattr(child.func, "id", None)) in LOOKUPS):
                add(child.args[0].value, where, True)
            in_function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, path, lazy or in_function)

    for file in sorted((REPO / "tui").rglob("*.py")):
        rel = str(file.relative_to(REPO))
        visit(ast.parse(file.read_text(), rel), rel, False)
    return found


def test_every_third_party_import_is_declared() -> None:
    core, extras = _declared()
    dists = packages_distributions()
    imports = _imports()
    assert {"httpx", "textual", "rich", "jinja2"} <= set(imports)  # the walk finds imports
    problems = []
    for module, where in sorted(imports.items()):
        names = {_normal(d) for d in dists.get(module, ())}
        if not names:
            problems.append(f"{module} (imported at {sorted(where['eager'] | where['lazy'])[0]})"
                            " is not installed, so no distribution provides it")
            continue
        if module in EXTRA_OF:
            extra = EXTRA_OF[module]
            if not names & extras.get(extra, set()):
                problems.append(f"{module}: {sorted(names)} is not in the [{extra}] extra")
            if where["eager"]:
                problems.append(f"{module} is optional but imported when a module loads: "
                                f"{sorted(where['eager'])}")
            continue
        if names & core:
            continue
        if where["eager"]:
            problems.append(f"{module} ({sorted(names)}) is imported at "
                            f"{sorted(where['eager'])[0]} but is no core dependency")
        elif not any(names & reqs for reqs in extras.values()):
            problems.append(f"{module} ({sorted(names)}) is in no dependency list")
    assert not problems, "\n".join(problems)


def test_httpcore_is_not_imported() -> None:
    """The download engine does its own socket work; httpx's internals are not ModelDeck's."""
    assert "httpcore" not in _imports()
