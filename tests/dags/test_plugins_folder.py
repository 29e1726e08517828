"""The plugins folder, loaded the way a running scheduler/dag-processor/api-server loads it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# What airflow.plugins_manager does at start-up, in a fresh interpreter: every file that is not
# .airflowignore'd is executed as a module named after the file. Reports the import errors and
# every module it added under a bare name that shadows an importable module or a project one.
PROBE = """
import importlib.util, json, sys
from pathlib import Path
from airflow import settings
from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory

folder = sys.argv[1]
sys.path[:] = [p for p in sys.path if Path(p).resolve() != Path(folder).resolve()]
before = dict(sys.modules)
plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=folder)
shadows = []
for name, module in list(sys.modules.items()):
    path = str(getattr(module, "__file__", None) or "")
    if before.get(name) is module or not path.startswith(folder):
        continue
    if "." in name or (Path(path).name == "__init__.py" and Path(path).parent.name == name):
        continue  # imported as (or from) a package, under its real name
    del sys.modules[name]
    project = Path(folder, "fruits_pipeline", name + ".py").exists()
    spec = importlib.util.find_spec(name)  # the plugin file itself, found again, is no shadow
    elsewhere = spec is not None and Path(spec.origin or "").name != f"{name}.py"
    if name in before or elsewhere or project:
        shadows.append(name)
heavy = sorted(m for m in ("pyspark", "tensorflow", "keras") if m in sys.modules)
print(json.dumps(
    {"errors": errors, "loaded": [p.name for p in plugins], "shadows": shadows, "heavy": heavy}
))
"""


def load_plugins_folder(folder: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(folder)],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_plugins_manager_loads_no_project_module_under_a_bare_name():
    found = load_plugins_folder(ROOT / "plugins")
    # The one plugin (the batch report tab), loaded without Spark or TensorFlow.
    assert found == {"errors": {}, "loaded": ["fruits_batch_report"], "shadows": [], "heavy": []}


def test_the_probe_catches_the_bare_name_load_without_the_ignore_file(tmp_path):
    # The same folder without .airflowignore: every module of the package is run again under
    # its bare name (``config``, ``sync``...), as a module once named packaging.py replaced
    # the real ``packaging`` for every user.
    shutil.copytree(ROOT / "plugins", tmp_path / "plugins", ignore=shutil.ignore_patterns(".*"))
    found = load_plugins_folder(tmp_path / "plugins")
    modules = {path.stem for path in (ROOT / "plugins" / "fruits_pipeline").glob("*.py")}
    assert "config" in modules and set(found["shadows"]) == modules
