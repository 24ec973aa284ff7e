"""The code map: vfer/ holds only what two or more roles share, nothing lab-only, and no hubs.

Over the deployed code (edge_node/, broker_aggregator/, vfer/, provisioning/): no file over
400 lines; no function over 50 lines unless :data:`LONG_FUNCTIONS` says why (at most 8); no
module that only the tests reach (every module is reachable from a role's ``__main__``); HTTP
basic auth parsed in one module only. Each checker is also run on a small made-up tree, so a
check that could never fail would show.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Packages only the lab (training/) or the tests use.
LAB_ONLY = {
    "training",
    "tests",
    "amqtt",
    "matplotlib",
    "sklearn",
    "scipy",
    "flatbuffers",
    "playwright",
}
#: The deployed code the size, dead-module and basic-auth rules cover.
DEPLOYED = ("edge_node", "broker_aggregator", "vfer", "provisioning")
#: Every role: a module is alive when one of their ``__main__`` modules reaches it.
ROLES = (*DEPLOYED, "training")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 50
MAX_LONG_FUNCTIONS = 8

#: Functions over MAX_FUNCTION_LINES that stay, each with its reason (at most MAX_LONG_FUNCTIONS).
LONG_FUNCTIONS: dict[str, str] = {
    "provisioning/cloudinit.py::firstrun_sh": "the Pi's first-boot shell script as one template, "
    "read top to bottom in the order it runs",
    "vfer/bundle.py::write_bundle": "its 14 keyword parameters are the bundle's fields, one per "
    "line; the body (checks, export, files) is under 40 lines",
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def sources(root: Path, folders: tuple[str, ...]) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((root / folder).rglob("*.py"))


def long_files(root: Path) -> dict[str, int]:
    """Deployed files over MAX_FILE_LINES: path -> lines."""
    out = {}
    for p in sources(root, DEPLOYED):
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > MAX_FILE_LINES:
            out[p.relative_to(root).as_posix()] = n
    return out


def long_functions(root: Path) -> dict[str, int]:
    """Deployed functions over MAX_FUNCTION_LINES (def to last line): ``path::Qual.name`` -> lines."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = (child.end_lineno or child.lineno) - child.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        out[f"{where}::{name}"] = lines
                visit(child, f"{name}.", where)

    for p in sources(root, DEPLOYED):
        visit(ast.parse(p.read_text(encoding="utf-8")), "", p.relative_to(root).as_posix())
    return out


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _referenced(path: Path, known: set[str]) -> set[str]:
    """Modules ``path`` imports (and their packages), or names in a string (``python -m x.y``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names |= {w for w in node.value.replace("/", " ").split() if w in known}
    out = set()
    for name in names:
        parts = name.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known
    return out


def unreachable_modules(root: Path) -> set[str]:
    """Deployed modules no role's ``__main__`` reaches through imports (so only tests use them)."""
    files = {module_name(root, p): p for p in sources(root, ROLES)}
    known = set(files)
    todo = [m for m in files if m.endswith(".__main__")]
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod not in seen:
            seen.add(mod)
            todo += sorted(_referenced(files[mod], known) - seen)
    return {m for m in known - seen if m.split(".")[0] in DEPLOYED}


def basic_auth_parsers(root: Path) -> set[str]:
    """Deployed modules that decode HTTP basic credentials: a ``b64decode`` call in a module that
    names the ``Authorization`` header or the ``Basic`` scheme."""
    out = set()
    for p in sources(root, DEPLOYED):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        decodes = any(
            isinstance(n, ast.Call)
            and (getattr(n.func, "attr", None) or getattr(n.func, "id", None)) == "b64decode"
            for n in ast.walk(tree)
        )
        names_header = any(
            isinstance(n, ast.Constant)
            and isinstance(n.value, str)
            and ("Authorization" in n.value or "Basic " in n.value)
            for n in ast.walk(tree)
        )
        if decodes and names_header:
            out.add(p.relative_to(root).as_posix())
    return out


# the rules, on this repository ----------------------------------------------------------------
def test_vfer_imports_nothing_lab_only() -> None:
    offenders = {
        str(p.relative_to(REPO)): sorted(imported_roots(p) & LAB_ONLY)
        for p in sorted((REPO / "vfer").rglob("*.py"))
        if imported_roots(p) & LAB_ONLY
    }
    assert offenders == {}


def test_deployed_roles_import_no_test_helpers() -> None:
    for role in ("vfer", "edge_node", "broker_aggregator", "provisioning", "training"):
        for p in sorted((REPO / role).rglob("*.py")):
            assert "tests" not in imported_roots(p), p


def test_benchmarks_change_no_import_path() -> None:
    for p in sorted((REPO / "benchmarks").glob("*.py")):
        text = p.read_text(encoding="utf-8")
        assert "sys.path" not in text, f"{p.name} edits sys.path"
        assert "from tests.test_" not in text and "import tests.test_" not in text, p.name


def test_no_file_over_400_lines() -> None:
    assert long_files(REPO) == {}, "split these by idea (files stay under 400 lines)"


def test_long_functions_are_few_and_each_has_a_reason() -> None:
    assert len(LONG_FUNCTIONS) <= MAX_LONG_FUNCTIONS
    assert all(reason.strip() for reason in LONG_FUNCTIONS.values())
    found = long_functions(REPO)
    allowed = set(LONG_FUNCTIONS)
    unexplained = {f: n for f, n in found.items() if f not in allowed}
    assert unexplained == {}, "split these, or add one to LONG_FUNCTIONS with its reason"
    stale = allowed - set(found)
    assert not stale, f"now {MAX_FUNCTION_LINES} lines or fewer (or renamed): delete {stale}"


def test_every_deployed_module_is_reached_from_a_role() -> None:
    assert unreachable_modules(REPO) == set(), "only tests use these: delete or move them"


def test_basic_auth_is_parsed_in_one_module() -> None:
    parsers = basic_auth_parsers(REPO)
    assert len(parsers) == 1, parsers


def main_guards_not_last(root: Path) -> set[str]:
    """Modules whose ``if __name__ == "__main__":`` is followed by more code: run with ``python
    -m`` they call main() before what follows is defined (picheck_node did, a NameError)."""
    out = set()
    for path in sources(root, (*ROLES, "benchmarks")):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        guards = [
            i
            for i, n in enumerate(body)
            if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)
        ]
        if any(i != len(body) - 1 for i in guards):
            out.add(path.relative_to(root).as_posix())
    return out


def test_a_main_guard_comes_last() -> None:
    assert main_guards_not_last(REPO) == set()


# the checkers, on a made-up tree ----------------------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def test_the_checkers_find_what_they_look_for(tmp_path: Path) -> None:
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    root = _tree(
        tmp_path,
        {
            "vfer/__init__.py": "",
            "vfer/used.py": "import base64\nX = base64.b64decode(b'')\n",
            "vfer/dead.py": "'Authorization'\n",
            "vfer/big.py": "\n" * (MAX_FILE_LINES + 1),
            "edge_node/__init__.py": "",
            "edge_node/__main__.py": "from vfer import used\nRUN = 'python -m edge_node.child'\n",
            "edge_node/child.py": "",
            "edge_node/auth.py": "import base64\nH = 'Authorization'\nbase64.b64decode(H)\n",
            "provisioning/long.py": f"class A:\n    def f(self) -> None:\n{body}",
            "provisioning/early.py": "if __name__ == '__main__':\n    main()\ndef main(): pass\n",
            "provisioning/late.py": "def main(): pass\nif __name__ == '__main__':\n    main()\n",
        },
    )
    assert main_guards_not_last(root) == {"provisioning/early.py"}
    assert long_files(root) == {"vfer/big.py": MAX_FILE_LINES + 1}
    assert long_functions(root) == {"provisioning/long.py::A.f": MAX_FUNCTION_LINES + 1}
    assert unreachable_modules(root) == {
        "vfer.dead",
        "vfer.big",
        "edge_node.auth",
        "provisioning.long",
        "provisioning.early",
        "provisioning.late",
    }
    assert basic_auth_parsers(root) == {"edge_node/auth.py"}
