"""The package's plan holds: imports only go down the layers of docs/ARCHITECTURE.md, no module imports itself
through a circle, every subpackage says what it holds, no module is long, and relative links in the Markdown
files resolve. Imports are read with the AST, function-level ones included (the code imports lazily on purpose).
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lfqcodec"
MAX_LINES = 400
LONG_MODULES: dict[str, str] = {}  # path -> why it stays longer than MAX_LINES (none today)


def layers() -> list[str]:
    """The layer order, lowest first, as docs/ARCHITECTURE.md writes it: the one line ``base < model < ...``."""
    found = re.findall(r"^(\w+(?: < \w+)+)$", (ROOT / "docs" / "ARCHITECTURE.md").read_text(), re.M)
    assert len(found) == 1, f"docs/ARCHITECTURE.md should write the layer order once, found {found}"
    return found[0].split(" < ")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for each lfqcodec module ``path`` imports; ``from pkg import mod`` names ``pkg.mod``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "lfqcodec"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lfqcodec":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                is_module = (ROOT / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    ROOT / sub.replace(".", "/")).is_dir()  # fmt: skip
                found.append((node.lineno, sub if is_module else target))
    return found


def layer_of(module: str, order: list[str]) -> str | None:
    """The layer of ``lfqcodec.<layer>[.…]``; None for the package root (``__version__``, lazy exports)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer():
    order = layers()
    for path in MODULES:
        name = module_name(path)
        if name != "lfqcodec":
            assert layer_of(name, order) in order, f"{name}: not in the layer order of docs/ARCHITECTURE.md"
    assert {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"} - {
        "__init__"} == set(order), "each layer is one subpackage of lfqcodec/ (api: api.py)"  # fmt: skip


def test_imports_only_go_down():
    order = layers()
    upward = []
    for path in MODULES:
        here = layer_of(module_name(path), order)
        if here is None:
            continue
        for line, target in imports(path):
            there = layer_of(target, order)
            if there is not None and order.index(there) > order.index(here):
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {target} ({there})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_import_circles():
    graph = {module_name(p): {t for _, t in imports(p)} - {"lfqcodec"} for p in MODULES}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (circle := visit(start)):
            pytest.fail("import circle: " + " -> ".join(circle))


def test_each_subpackage_says_what_it_holds_and_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 40 and ("May import" in doc or "Imports nothing" in doc), f"{init}: docstring"


def test_no_long_modules():
    long = {str(p.relative_to(ROOT)): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= set(LONG_MODULES), f"modules over {MAX_LINES} lines: {long}"


LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_relative_links_in_markdown_resolve():
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "*.md"], capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    assert files
    broken = []
    for rel in files:
        text = (ROOT / rel).read_text()
        text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold commands, not links
        for match in LINK.finditer(text):
            target = (match.group(1) or match.group(2)).split("#", 1)[0]
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # an anchor in the same page, or a URL
            if not ((ROOT / rel).parent / target).exists():
                broken.append(f"{rel}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)
