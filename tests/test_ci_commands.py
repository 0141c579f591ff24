"""CI runs exactly the test commands the README names."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_test_commands() -> list:
    section = ROOT.joinpath("README.md").read_text().split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README.md's section '## Tests' has no bash block of test commands"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def ci_commands() -> list:
    lines = ROOT.joinpath(".ci", "run").read_text().splitlines()
    return [line.strip() for line in lines if line.strip().startswith("./")]


def test_ci_runs_the_readme_test_commands_in_order():
    assert readme_test_commands() == ["./run.sh test", "./run.sh test-host"]
    assert ci_commands() == readme_test_commands()
