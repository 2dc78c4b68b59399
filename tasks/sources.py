"""Which of the project's own source files a module runs, found by reading its imports.

Two things must change whenever that code changes, and both are derived from here so that
neither can drift from the code: a stage's `deps` in `dvc.yaml` (checked by
tests/test_dvc_yaml.py) and the key of a training checkpoint (tasks/train.py), so a fix in the
training code is never answered with weights trained by the old code.

Imports are read from the source with `ast`, anywhere in a file (an import inside a function
counts: it runs when the function does), and followed through the project's packages only.
"""

from __future__ import annotations

import ast
import hashlib
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "tasks")
# CPython 3.11's ast.parse is not thread-safe ("AST constructor recursion depth mismatch"), and
# folds training on a thread pool each compute their checkpoint key.
_PARSE_LOCK = threading.Lock()


def module_file(module: str, root: Path) -> Path | None:
    """`tasks.train` -> root/tasks/train.py (or a package's __init__.py); None if not the project's."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Dotted names `path` imports: `import a.b`, `from a import b` (a.b if b is a module, else a)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    with _PARSE_LOCK:
        tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package `level - 1` steps above this one
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imported_modules(module: str, root: Path | None = None) -> set[str]:
    """`module` and every project module it imports, directly or through others, with the
    packages they belong to (importing `tasks.train` runs `tasks/__init__.py` first)."""
    root = root or ROOT
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the module and each package above it
            prefix = ".".join(parts[:i])
            path = module_file(prefix, root)
            if path is None or prefix in seen:
                continue
            seen.add(prefix)
            todo.extend(_imports(path, prefix))
    if module not in seen:
        raise ValueError(f"{module}: not a module of the project's packages {PACKAGES} under {root}")
    return seen


def package_data(package_dir: Path) -> list[Path]:
    """Files a package reads from its own folder (templates, say): everything but Python files,
    caches and subpackages (folders with an __init__.py, which are modules of their own)."""
    found = []
    for path in sorted(package_dir.iterdir()):
        if path.is_dir() and path.name != "__pycache__" and not (path / "__init__.py").exists():
            found += [p for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
        elif path.is_file() and path.suffix not in (".py", ".pyc"):
            found.append(path)
    return found


def source_files(module: str, root: Path | None = None) -> list[str]:
    """The files of `imported_modules(module)` and the data of the packages among them, relative
    to the project root, sorted."""
    root = root or ROOT
    files = set()
    for name in imported_modules(module, root):
        path = module_file(name, root)
        files.add(path)
        if path.name == "__init__.py":
            files.update(package_data(path.parent))
    return sorted(str(p.relative_to(root)) for p in files)


def source_digest(module: str, root: Path | None = None) -> str:
    """sha256 over the path and bytes of every project file `module` runs."""
    root = root or ROOT
    digest = hashlib.sha256()
    for name in source_files(module, root):
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()
