"""The project's promises about itself: README's test command is what CI runs."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_both_quick_start_commands_written_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    assert len(blocks) >= 2, "README's quick start needs its two commands"
    demo, tests = blocks[0].strip(), blocks[1].strip()
    assert demo.endswith("lca demo")
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert demo in ci, f"{demo!r} is not a line of .ci/run"
    assert tests in ci, f"{tests!r} is not a line of .ci/run"


def test_the_only_doc_blocks_not_run_by_the_docs_test_are_run_by_ci():
    """tox env examples runs every python/bash block of README.md and docs/ (pytest
    --codeblocks); a block marked skip must be one .ci/run runs verbatim instead."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    skip = r"<!--pytest\.mark\.skip\(reason=\"([^\"]+)\"\)-->\n```(\w+)\n(.*?)\n```"
    skipped = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for reason, _, code in re.findall(skip, page.read_text(), flags=re.S):
            assert ".ci/run" in reason, f"{page.name}: a doc block skipped for {reason!r}"
            assert code.strip() in ci, f"{page.name}: {code.strip()!r} is not a line of .ci/run"
            skipped.append(code)
    assert len(skipped) >= 2  # README's two quick-start commands


def test_docs_linked_from_the_readme_exist():
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", readme):
        assert (ROOT / link).exists(), link


def test_the_api_page_lists_every_contract_option_with_its_default():
    from lca_core.contract import OPTIONS

    text = (ROOT / "docs" / "api.md").read_text()
    for name, default in OPTIONS.items():
        assert f"| `{name}` | `{default!r}` |" in text, name


def _layers() -> dict[str, int]:
    """The layer table of docs/architecture.md: module → layer number."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = {}
    for number, modules in re.findall(r"^\| (\d+) \| (.+) \|$", text, flags=re.M):
        for name in re.findall(r"`([\w.]+)`", modules):
            table[name] = int(number)
    return table


def _module_level_imports(path: Path) -> set[str]:
    """lca_core modules a file imports at module level (not lazily, not for type checking)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = [*package[: len(package) - node.level + 1], *(node.module or "").split(".")]
            found.add(next((p for p in parts[1:] if p), ""))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            found |= {n.split(".")[1] for n in names if n and n.startswith("lca_core.")}
    return found - {""}


def test_modules_import_only_from_their_layer_or_below():
    layers = _layers()
    files = sorted((ROOT / "lca_core").rglob("*.py"))
    for path in files:
        parts = path.relative_to(ROOT / "lca_core").with_suffix("").parts
        module = parts[0]
        assert module in layers, f"{module} is missing from docs/architecture.md's layer table"
        for imported in _module_level_imports(path):
            if imported == module:
                continue
            assert layers[imported] <= layers[module], (
                f"lca_core/{'/'.join(parts)}.py (layer {layers[module]}) imports {imported} "
                f"(layer {layers[imported]}): an arrow up the layers"
            )
    assert len(files) > 30  # the walk found the package
