"""The code map: vfer/ holds only what two or more roles share, and nothing lab-only."""

from __future__ import annotations

import ast
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


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_vfer_imports_nothing_lab_only() -> None:
    offenders = {
        str(p.relative_to(REPO)): sorted(imported_roots(p) & LAB_ONLY)
        for p in sorted((REPO / "vfer").glob("*.py"))
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
