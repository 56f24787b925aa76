"""Workflow scripts are thin: each hands the ``snakemake`` object to one job of latentaudit/jobs/,
which reads the rule's inputs, params and outputs by name."""
import ast
import re

import pytest

from conftest import REPO

SCRIPTS = sorted((REPO / "workflow_scripts").glob("*.py"))


def rule_scripts() -> set[str]:
    """The workflow scripts the rules run (``script: "../workflow_scripts/<name>.py"``)."""
    text = "".join(path.read_text() for path in (REPO / "rules").glob("*.smk"))
    return set(re.findall(r'script:\s*\n\s*"\.\./workflow_scripts/(\w+\.py)"', text))


def test_every_rule_script_exists_and_every_script_is_run_by_a_rule():
    assert rule_scripts() == {path.name for path in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_workflow_script_is_at_most_12_lines_and_calls_one_job_with_the_snakemake_object(script):
    lines = script.read_text().splitlines()
    assert len(lines) <= 12, f"{script.name}: {len(lines)} lines; the logic belongs in latentaudit/jobs/"
    tree = ast.parse(script.read_text())
    jobs = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
            and node.module.startswith("latentaudit.jobs.") for alias in node.names}
    calls = [node.value for node in tree.body if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
    # start(snakemake), then the job(snakemake): nothing reshaped in between
    assert [(call.func.id, [ast.unparse(a) for a in call.args]) for call in calls] == \
        [("start", ["snakemake"]), (*jobs, ["snakemake"])], ast.unparse(tree)
    assert len(jobs) == 1
