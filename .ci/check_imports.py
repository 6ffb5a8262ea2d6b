"""Import-direction check: dependencies flow export, robot, sim -> planner_runtime, never back.

Rules (every import counts, also one inside a function, a relative one, or a constant-string
``importlib.import_module`` / ``__import__`` call):
  planner_runtime/  imports none of export, robot, sim, torch; h5py and tqdm only inside a
                    function (the serving path must start without them)
  robot/            imports neither sim nor export

Usage: python .ci/check_imports.py [ROOT]   (ROOT: the repository root, default: this file's
parent's parent). Prints each violation as FILE:LINE and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# package -> top-level modules it must never import, anywhere in the file
FORBIDDEN = {
    "planner_runtime": {"export", "robot", "sim", "torch"},
    "robot": {"sim", "export"},
}
# package -> top-level modules it may import only inside a function (lazily)
LAZY_ONLY = {
    "planner_runtime": {"h5py", "tqdm"},
}
# Known violations, allowed for now: (file, imported module). Each is printed on every run.
ALLOWED: set[tuple[str, str]] = set()


def _package_of(rel: Path) -> list[str]:
    """The package a file's relative imports resolve against (its directory, as parts)."""
    return list(rel.parent.parts)


def imports(tree: ast.AST, rel: Path) -> list[tuple[int, str, bool]]:
    """(line, absolute module name, at module level) for every import in the tree."""
    out: list[tuple[int, str, bool]] = []
    package = _package_of(rel)

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name, top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: max(len(package) - (node.level - 1), 0)]
                if node.module is None:  # from . import a, b: each name may be a module
                    out.extend((node.lineno, ".".join([*base, a.name]), top) for a in node.names)
                    return
                mod = ".".join([*base, node.module])
            else:
                mod = node.module or ""
            out.append((node.lineno, mod, top))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value, top))
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return out


def check(root: Path) -> tuple[list[str], list[str]]:
    """(violations, allowed known violations) as 'FILE:LINE: message' lines."""
    bad: list[str] = []
    allowed: list[str] = []
    for package in sorted(set(FORBIDDEN) | set(LAZY_ONLY)):
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(rel))
            except SyntaxError as exc:
                bad.append(f"{rel}:{exc.lineno}: cannot parse: {exc.msg}")
                continue
            for line, mod, top in imports(tree, rel):
                head = mod.split(".")[0]
                where = f"{rel.as_posix()}:{line}"
                if head in FORBIDDEN.get(package, ()):
                    msg = f"{where}: {package}/ imports {mod}"
                    if (rel.as_posix(), mod) in ALLOWED:
                        allowed.append(msg + " (known, allowed for now)")
                    else:
                        bad.append(msg)
                elif top and head in LAZY_ONLY.get(package, ()):
                    bad.append(f"{where}: {package}/ imports {mod} at module level "
                               "(import it inside the function that needs it)")
    return bad, allowed


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    if not (root / "planner_runtime").is_dir():
        print(f"{root}: no planner_runtime/ here; pass the repository root", file=sys.stderr)
        return 2
    bad, allowed = check(root)
    for line in allowed:
        print(line)
    for line in bad:
        print(line)
    n_files = sum(1 for p in set(FORBIDDEN) | set(LAZY_ONLY) for _ in (root / p).rglob("*.py"))
    if bad:
        print(f"import direction: {len(bad)} violation(s) in {n_files} files")
        return 1
    print(f"import direction: ok ({n_files} files, {len(allowed)} known exception(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
