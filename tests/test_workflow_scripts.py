"""Workflow scripts are thin: each hands the ``snakemake`` object to one job of latentaudit/jobs/,
which reads the rule's inputs, params and outputs by name."""
import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, copy_repo

SCRIPTS = sorted((REPO / "workflow_scripts").glob("*.py"))


def rule_scripts() -> set[str]:
    """The workflow scripts the rules run (``script: "../workflow_scripts/<name>.py"``)."""
    text = "".join(path.read_text() for path in (REPO / "rules").glob("*.smk"))
    return set(re.findall(r'script:\s*\n\s*"\.\./workflow_scripts/(\w+\.py)"', text))


def test_every_rule_script_exists_and_every_script_is_run_by_a_rule():
    assert rule_scripts() == {path.name for path in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_workflow_script_is_at_most_12_lines_and_hands_one_job_the_snakemake_object(script):
    lines = script.read_text().splitlines()
    assert len(lines) <= 12, f"{script.name}: {len(lines)} lines; the logic belongs in latentaudit/jobs/"
    tree = ast.parse(script.read_text())
    imports = [(node.module, [alias.name for alias in node.names]) for node in tree.body
               if isinstance(node, (ast.Import, ast.ImportFrom))]
    calls = [node.value for node in tree.body if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
    # run_job(snakemake, "latentaudit.jobs.<module>:<function>"): nothing reshaped, nothing else run
    assert imports == [("latentaudit.cli", ["run_job"])] and len(calls) == 1, ast.unparse(tree)
    call = calls[0]
    assert call.func.id == "run_job" and [ast.unparse(a) for a in call.args[:1]] == ["snakemake"], ast.unparse(tree)
    assert call.args[1].value.startswith("latentaudit.jobs.")
    job_of_script(script.name)  # the job exists (read from the source: the module is not imported here)


# Every rule with a script, as the workflow declares it: loaded through Snakemake's API in a fresh
# interpreter, for the smoke experiment with the audit, for the paper's with capability and for the
# real chat model's (its material rules: wheels and GGUF conversion).
DECLARED_FIELDS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    rules = {}
    for configfile, config in (("configs/smoke.yaml", {"audit_model": "organism"}),
                               ("configs/paper.yaml", {"capability": {"tasks": ["mmlu"]}}),
                               ("configs/smollm2.yaml", {})):
        with SnakemakeApi(OutputSettings()) as api:
            workflow = api.workflow(ResourceSettings(cores=1), ConfigSettings(configfiles=[Path(configfile)],
                                    config=config), snakefile=Path("Snakefile"), workdir=Path("."))._workflow
            for rule in workflow.rules:
                if rule.script:
                    rules[rule.name] = {"script": Path(rule.script).name, "input": sorted(rule.input._names),
                                        "output": sorted(rule.output._names), "params": sorted(rule.params._names),
                                        "wildcards": sorted(rule.wildcard_names)}
    print(json.dumps(rules))
""")
SECTIONS = ("input", "output", "params", "wildcards")
METHODS = {"keys", "items", "get"}


def declared_fields(workdir: Path) -> dict[str, dict]:
    """{rule: {"script": its workflow script, section: the names the rule gives its fields}}."""
    result = subprocess.run([sys.executable, "-c", DECLARED_FIELDS], cwd=workdir, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(workdir)})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def fields_read(function: ast.FunctionDef) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """((section, name) a job reads by name, (section, name) it reads only after checking
    ``"name" in <section>.keys()``): attributes and constant subscripts of ``job.<section>``,
    directly or through a local alias (``p, i = job.params, job.input``)."""
    job = function.args.args[0].arg
    section_of = lambda node: node.attr if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)  # noqa
                                            and node.value.id == job and node.attr in SECTIONS) else None
    aliases = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            pairs = zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) \
                else [(target, value)]
            aliases.update({t.id: section_of(v) for t, v in pairs if isinstance(t, ast.Name) and section_of(v)})

    def section(node):
        return aliases.get(node.id) if isinstance(node, ast.Name) else section_of(node)

    read, guarded = set(), set()
    for node in ast.walk(function):
        if isinstance(node, ast.Attribute) and section(node.value) and node.attr not in METHODS:
            read.add((section(node.value), node.attr))
        elif isinstance(node, ast.Subscript) and section(node.value) and isinstance(node.slice, ast.Constant):
            read.add((section(node.value), node.slice.value))
        elif (isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and isinstance(node.ops[0], ast.In)
              and isinstance(node.comparators[0], ast.Call) and isinstance(node.comparators[0].func, ast.Attribute)
              and section(node.comparators[0].func.value)):
            guarded.add((section(node.comparators[0].func.value), node.left.value))
    return read, guarded


def job_of_script(script: str) -> ast.FunctionDef:
    """The job function a workflow script hands to run_job, parsed from its module in latentaudit/jobs/."""
    [call] = [node.value for node in ast.parse((REPO / "workflow_scripts" / script).read_text()).body
              if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
    module, name = call.args[1].value.split(":")
    tree = ast.parse((REPO / Path(*module.split("."))).with_suffix(".py").read_text())
    return next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name)


def test_the_reading_of_fields_sees_aliases_subscripts_and_guards():
    source = textwrap.dedent("""
        def a_job(job):
            p, i = job.params, job.input
            out = job.output
            if "extra" in i.keys():
                use(i.extra)
            use(p.seed, i["records"], out.model, job.wildcards.model, i.items())
        """)
    read, guarded = fields_read(ast.parse(source).body[0])
    assert read == {("params", "seed"), ("input", "records"), ("input", "extra"), ("output", "model"),
                    ("wildcards", "model")}
    assert guarded == {("input", "extra")}


def test_every_field_a_job_reads_is_named_by_each_rule_that_runs_it(tmp_path):
    rules = declared_fields(copy_repo(tmp_path / "repo"))
    assert {rule["script"] for rule in rules.values()} == {path.name for path in SCRIPTS}
    for name, rule in rules.items():
        read, guarded = fields_read(job_of_script(rule["script"]))
        # a guarded field may come from an input function (unpack), named only per job
        missing = sorted(f"{section}.{field}" for section, field in read - guarded if field not in rule[section])
        assert not missing, f"rule {name}: its job reads {missing}, which the rule does not name"
