"""The package's import graph: no cycles, and layers that point one way.

Read from the source (every `import` and `from ... import`, including those inside functions),
so the rule holds for the code as written, not for what one test run happened to import.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "forecaster"

# What each layer may import, besides itself. The base (errors, schema, config, words) imports no layer.
# The package itself (__init__) is the public face on top: it names the base's errors and, on first use,
# the API's `Pipeline` (forecaster/api.py, beside app and cli).
BASE = {"forecaster.errors", "forecaster.schema", "forecaster.config", "forecaster.words"}
ALLOWED = {
    "io": {"base"},
    "serving": {"base"},
    "learning": {"base", "serving", "io", "build"},
    "evaluation": {"base", "serving", "learning"},
    "build": {"base", "serving", "io"},
    "tools": {"base", "serving", "learning", "evaluation", "io", "build", "app", "metrics", "logs"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The forecaster modules `path` imports, resolved to module names (a `from package import module` counts the
    module)."""
    found = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("forecaster")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.startswith("forecaster"):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in MODULES else base)
    return found


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {module_name(p): imports(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str:
    if module in BASE:
        return "base"
    if module == "forecaster":
        return "package"
    return module.split(".")[1]


def test_the_package_has_no_import_cycle():
    done, path, cycles = set(), [], []

    def visit(module):
        if module in path:
            cycles.append(path[path.index(module) :] + [module])
            return
        if module in done:
            return
        path.append(module)
        for other in sorted(GRAPH.get(module, ())):
            visit(other)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_layer_imports_only_the_layers_below_it():
    wrong = []
    for module, imported in sorted(GRAPH.items()):
        allowed = ALLOWED.get(layer(module))
        if allowed is None:  # the top: app, cli, and the base itself (checked below)
            continue
        wrong += [
            f"{module} imports {other}"
            for other in sorted(imported)
            if layer(other) != layer(module) and layer(other) not in allowed
        ]
    assert wrong == []


def test_the_base_imports_nothing_but_the_base():
    wrong = [f"{m} imports {o}" for m in sorted(BASE & set(GRAPH)) for o in sorted(GRAPH[m]) if layer(o) != "base"]
    assert wrong == []


def test_only_the_client_modules_import_a_kafka_library():
    importers = {
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(
            name.split(".")[0] in ("kafka", "confluent_kafka")
            for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
        )
    }
    assert importers == {"forecaster.io.kafka", "forecaster.io.confluent"}
