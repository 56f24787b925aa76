"""The project's Python files a script imports, found by reading the source (``ast``), not by
running it: what a Snakemake rule lists as code inputs so that editing any of them reruns it."""
from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path


def module_file(module: str, root: Path) -> Path | None:
    """The file under ``root`` that defines the dotted ``module`` (``a/b.py`` or
    ``a/b/__init__.py``); None for a module that is not the project's (a third-party or
    standard-library one) or a name that is not a module (a function imported from one)."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, package: str | None) -> set[str]:
    """The dotted names every import statement of ``path`` may load, wherever it stands (a
    function-level import too), and the job module a workflow script names in ``run_job``.
    ``from a import b`` names ``a`` and ``a.b`` (``b`` may be a submodule); a relative import is
    resolved against ``package``, the package ``path`` is in (None for a script outside any
    package, where a relative import is an error)."""
    stat = path.stat()
    return set(_imported_modules(str(path), package, stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=None)
def _imported_modules(path: str, package: str | None, mtime_ns: int, size: int) -> frozenset[str]:
    """``imported_modules`` of one version of a file (its modification time and size are part of the
    key): a Snakefile asks for the same files once per rule, and parsing them was ~2 s of every DAG."""
    names = set()
    for node in ast.walk(ast.parse(Path(path).read_text(), filename=path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = (package or "").split(".") if package else []
                if node.level > len(parts):
                    raise ImportError(f"{path}: relative import beyond the top-level package (level {node.level})")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif _is_job_call(node):  # run_job(snakemake, "package.module:function") imports the module
            names.add(node.args[1].value.partition(":")[0])
    return frozenset(names)


def _is_job_call(node: ast.AST) -> bool:
    """A workflow script's ``run_job(snakemake, "package.module:function")`` (``cli.run_job``)."""
    if not isinstance(node, ast.Call) or len(node.args) < 2:
        return False
    name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
    target = node.args[1]
    return name == "run_job" and isinstance(target, ast.Constant) and isinstance(target.value, str)


def imported_project_files(script: str | Path, root: str | Path, also_imports: Iterable[str] = ()) -> list[str]:
    """The files of the project modules (those under ``root``) that ``script`` imports, directly or
    through one another, relative imports included, with the ``__init__.py`` of every package on the
    way (importing ``a.b`` runs ``a/__init__.py``): sorted paths relative to ``root``, ``script``
    itself not among them.

    ``also_imports``: dotted modules the script's job imports by name at run time (the module that
    registers a job's attack, judge or variant), which reading the script cannot see. Imports made
    with ``importlib`` inside the walked modules are not followed."""
    root = Path(root).resolve()
    files: set[Path] = set()
    pending = set(imported_modules(Path(script), None)) | set(also_imports)
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        pending.update(".".join(parts[:i]) for i in range(1, len(parts)))  # the packages it sits in
        path = module_file(module, root)
        if path is None:
            continue
        files.add(path)
        package = module if path.name == "__init__.py" else ".".join(parts[:-1])
        pending.update(imported_modules(path, package))
    return sorted(path.relative_to(root).as_posix() for path in files)
