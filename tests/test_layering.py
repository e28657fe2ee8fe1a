"""The layering: arrows go jobs -> pipelines -> sp_core; sp_core never imports Ray or MLflow."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_SP_CORE = {"ray", "mlflow", "pipelines", "jobs"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_sp_core_source_imports_no_ray_mlflow_or_upper_layers():
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_roots(path) & FORBIDDEN_IN_SP_CORE)
        for path in (ROOT / "sp_core").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_sp_core_loads_neither_ray_nor_mlflow():
    code = "import sys, sp_core, sp_core.convert, sp_core.tiny, sp_core.loading; " \
           "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
