"""The project's promises about itself: README's test command is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_test_command_written_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    assert len(blocks) >= 2, "README's quick start needs its two commands"
    demo, tests = blocks[0].strip(), blocks[1].strip()
    assert demo.endswith("lca demo")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, f"{tests!r} is not a line of .ci/run"


def test_docs_linked_from_the_readme_exist():
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", readme):
        assert (ROOT / link).exists(), link


def test_the_api_page_lists_every_contract_option_with_its_default():
    from lca_core.contract import OPTIONS

    text = (ROOT / "docs" / "api.md").read_text()
    for name, default in OPTIONS.items():
        assert f"| `{name}` | `{default!r}` |" in text, name
