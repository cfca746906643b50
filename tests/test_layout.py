"""The source layout: what pyproject declares matches the folders, and core stays plugin-free."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
DECLARED_ENTRY_POINTS: dict[str, str] = PYPROJECT["project"]["entry-points"]["mtlkit"]


def package_folder(package: str) -> Path:
    """The folder that holds ``package`` according to package-dir (longest prefix wins)."""
    best = ""
    for prefix in PACKAGE_DIR:
        if (package == prefix or package.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    assert best, f"{package} is under no package-dir entry"
    rest = package[len(best) :].lstrip(".")
    folder = ROOT / PACKAGE_DIR[best]
    return folder.joinpath(*rest.split(".")) if rest else folder


def folder_package(folder: Path) -> str:
    """The dotted package name of a source folder under core/ or plugins/."""
    for prefix, rel in sorted(PACKAGE_DIR.items(), key=lambda kv: -len(kv[1])):
        base = ROOT / rel
        if folder == base or base in folder.parents:
            parts = folder.relative_to(base).parts
            return ".".join([prefix, *parts])
    raise AssertionError(f"{folder} is under no package-dir folder")


def python_folders(top: Path) -> set[Path]:
    return {
        p.parent
        for p in top.rglob("*.py")
        if "__pycache__" not in p.parts and not any(part.startswith(".") for part in p.parts)
    }


def test_package_dir_maps_mtlkit_to_core_and_plugins():
    assert PACKAGE_DIR.get("mtlkit") == "core"
    assert PACKAGE_DIR.get("mtlkit.plugins") == "plugins"


def test_every_declared_package_is_an_existing_package_folder():
    for package in PACKAGES:
        folder = package_folder(package)
        assert (folder / "__init__.py").is_file(), f"{package} -> {folder} has no __init__.py"


@pytest.mark.parametrize("top", ["core", "plugins"])
def test_every_source_folder_is_a_declared_package(top):
    missing = sorted(
        folder_package(folder)
        for folder in python_folders(ROOT / top)
        if folder_package(folder) not in PACKAGES
    )
    assert not missing, f"folders with .py files but not in [tool.setuptools] packages: {missing}"
    for folder in python_folders(ROOT / top):
        assert (folder / "__init__.py").is_file(), f"{folder} has .py files but no __init__.py"


def test_no_top_level_core_or_plugins_package_is_declared():
    for package in [*PACKAGES, *PACKAGE_DIR]:
        assert package.split(".")[0] == "mtlkit", f"{package!r} is not inside mtlkit"


@pytest.mark.parametrize("name", ["core", "plugins"])
def test_source_folder_names_are_not_importable(tmp_path, name):
    code = (
        "import importlib, sys\n"
        f"try:\n    importlib.import_module({name!r})\n"
        "except ModuleNotFoundError:\n    sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"`import {name}` works from {tmp_path}: {done.stderr}"


def test_mtlkit_is_imported_from_core_and_plugins_from_plugins(tmp_path):
    code = (
        "import mtlkit, mtlkit.plugins, mtlkit.cli, mtlkit.plugins.synthetic\n"
        "print(mtlkit.__file__); print(mtlkit.plugins.__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    core_file, plugins_file = (Path(line) for line in done.stdout.split())
    assert core_file == ROOT / "core" / "__init__.py"
    assert plugins_file == ROOT / "plugins" / "__init__.py"


def _imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``path`` (relative ones resolved),
    plus ``importlib.import_module("...")`` / ``__import__("...")`` calls with a literal."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = package  # __package__ of the module, for a package's __init__ too
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    out.append((node.lineno, arg.value))
    return out


def test_core_never_imports_the_builtin_plugins():
    offenders = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        package = folder_package(path.parent)
        for line, module in _imported_modules(path, package):
            if module == "mtlkit.plugins" or module.startswith("mtlkit.plugins."):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {module}")
            if module.split(".")[0] == "plugins":
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not offenders, "core imports the built-in plugins:\n" + "\n".join(offenders)


def test_the_import_checker_catches_plugin_imports(tmp_path):
    # Guards the test above: each way core could reach the plugins is seen.
    sample = tmp_path / "mod.py"
    sample.write_text(
        "import importlib\n"
        "from ..plugins import heads\n"
        "from .. import plugins\n"
        "import mtlkit.plugins.metrics as m\n"
        "importlib.import_module('mtlkit.plugins.reports')\n"
        "from ..config import load_config\n",
        encoding="utf-8",
    )
    found = {m for _, m in _imported_modules(sample, "mtlkit.cli")}
    assert {
        "mtlkit.plugins",
        "mtlkit.plugins.heads",
        "mtlkit.plugins.metrics",
        "mtlkit.plugins.reports",
        "mtlkit.config.load_config",
    } <= found


def _hookimpl_modules() -> set[str]:
    """Dotted names of every module under plugins/ that defines a hook implementation."""
    modules = set()
    for path in (ROOT / "plugins").rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = {
                    d.id if isinstance(d, ast.Name) else getattr(d, "attr", "")
                    for d in (
                        dec.func if isinstance(dec, ast.Call) else dec
                        for dec in node.decorator_list
                    )
                }
                if "hookimpl" in names:
                    package = folder_package(path.parent)
                    module = package if path.name == "__init__.py" else f"{package}.{path.stem}"
                    modules.add(module)
    return modules


def test_every_builtin_plugin_module_is_an_entry_point():
    plugin_modules = _hookimpl_modules()
    assert "mtlkit.plugins.heads" in plugin_modules  # the scan itself works
    declared = {value.split(":")[0].strip() for value in DECLARED_ENTRY_POINTS.values()}
    assert plugin_modules <= declared, f"not declared in pyproject: {plugin_modules - declared}"


def test_every_entry_point_names_an_existing_module():
    for name, value in DECLARED_ENTRY_POINTS.items():
        module = value.split(":")[0].strip()
        package, _, leaf = module.rpartition(".")
        folder = package_folder(package)
        assert (folder / f"{leaf}.py").is_file() or (folder / leaf / "__init__.py").is_file(), (
            f"entry point {name} = {value}: no such module file"
        )


def test_installed_entry_points_match_pyproject():
    installed = {
        ep.name: ep.value
        for ep in entry_points(group="mtlkit")
        if ep.dist is not None and ep.dist.name == "mtlkit"
    }
    assert installed == DECLARED_ENTRY_POINTS, "reinstall: pip install -e . (metadata is stale)"
