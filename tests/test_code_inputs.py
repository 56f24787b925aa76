"""Code inputs: every project module a rule's job imports is among the rule's inputs, so editing
it reruns the rule. Read from the jobs `snakemake -n` prints, against what importing really loads."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REPO, copy_repo, snakemake
from latentaudit.project_imports import imported_project_files
from latentaudit.registry import ATTACKS, JUDGES, VARIANTS, load_all

# The rules whose job imports the module that registers its method by name (no import statement
# shows it): the registry and the wildcard that names the method.
METHOD_OF_RULE = {"attack": (ATTACKS, "attack"), "judge": (JUDGES, "judge"), "model_judge": (JUDGES, "judge"),
                  "build_variant": (VARIANTS, "variant")}

# Run in a fresh interpreter: for each (script, method modules) line on stdin, a forked child runs
# the script's own import statements, imports what its run_job call imports and the modules, then reports the files of the project
# modules now loaded (the parent loads the heavy third-party packages once, and nothing of the project).
LOADED_PROJECT_FILES = textwrap.dedent("""
    import ast, importlib, json, os, sys
    from pathlib import Path

    root = Path(sys.argv[1]).resolve()
    for heavy in ("torch", "transformers", "peft", "pandas"):
        importlib.import_module(heavy)


    def project_files():
        files = set()
        for name, module in list(sys.modules.items()):
            top = name.split(".")[0]
            if getattr(module, "__file__", None) and ((root / top).is_dir() or (root / f"{top}.py").is_file()):
                files.add(Path(module.__file__).resolve().relative_to(root).as_posix())
        return sorted(files)


    for line in sys.stdin:
        script, modules = json.loads(line)
        read, write = os.pipe()
        if os.fork() == 0:
            tree = ast.parse((root / script).read_text())
            imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
            exec(compile(ast.Module(imports, type_ignores=[]), script, "exec"), {})
            # run_job(snakemake, "module:function") imports the job server, then the job's module
            jobs = [node.args[1].value.partition(":")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_job"]
            for module in (["latentaudit.job_server"] if jobs else []) + jobs + list(modules):
                importlib.import_module(module)
            os.write(write, json.dumps(project_files()).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as answer:
            print(json.dumps([script, modules, json.loads(answer.read())]), flush=True)
        os.wait()
""")


def dry_run_job_inputs(workdir: Path, *args: str) -> list[tuple[str, dict, list[str]]]:
    """(rule, wildcards, inputs) of every job ``snakemake -n --forceall`` prints."""
    result = snakemake(workdir, "-n", "--forceall", *args)
    jobs = []
    for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n)+)", result.stdout, re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, re.M))
        wildcards = dict(pair.split("=", 1) for pair in fields["wildcards"].split(", ")) if "wildcards" in fields else {}
        jobs.append((rule, wildcards, fields["input"].split(", ") if "input" in fields else []))
    assert jobs, result.stdout[-2000:]
    return jobs


def loaded_project_files(cases: set[tuple[str, tuple[str, ...]]]) -> dict[tuple[str, tuple[str, ...]], set[str]]:
    """{(script, method modules): the project files loaded by running the script's imports and
    importing the modules}, each in its own fresh process."""
    lines = "".join(json.dumps([script, list(modules)]) + "\n" for script, modules in sorted(cases))
    result = subprocess.run([sys.executable, "-c", LOADED_PROJECT_FILES, str(REPO)], input=lines, capture_output=True,
                            text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    return {(script, tuple(modules)): set(files) for script, modules, files in answers}


def rules_with_a_script() -> set[str]:
    """The rules of rules/*.smk that run a workflow script."""
    rules = set()
    for path in (REPO / "rules").glob("*.smk"):
        parts = re.split(r"^ *rule (\w+):$", path.read_text(), flags=re.M)
        rules.update(name for name, body in zip(parts[1::2], parts[2::2]) if "script:" in body)
    return rules


def test_every_project_module_a_job_imports_is_among_its_inputs(tmp_path):
    load_all()
    workdir = copy_repo(tmp_path / "repo")
    # every rule of the workflow: the smoke experiment with the audit and the benchmarks, the
    # paper's experiment (real data, model judges) with capability benchmarks, and the real CPU track
    jobs = (dry_run_job_inputs(workdir, "--configfile", "configs/smoke.yaml", "--config", "audit_model=organism",
                               "--", "all", "bench", "bench_gpu", "audit")
            + dry_run_job_inputs(workdir, "--configfile", "configs/paper.yaml", "--config", "capability={tasks: [mmlu]}")
            # the real CPU track: wheels fetched, the GGUF converted
            + dry_run_job_inputs(workdir, "--configfile", "configs/smollm2.yaml", "--", "all",
                                 "results/bench/models/smollm2/sweep.md"))
    cases = {}
    for rule, wildcards, inputs in jobs:
        scripts = [path for path in inputs if path.startswith("workflow_scripts/")]
        if not scripts:
            continue
        assert len(scripts) == 1, (rule, scripts)
        registry, wildcard = METHOD_OF_RULE.get(rule, (None, None))
        modules = (registry[wildcards[wildcard]].function.__module__,) if registry is not None else ()
        cases.setdefault((scripts[0], modules), []).append((rule, wildcards, inputs))
    assert {rule for group in cases.values() for rule, _, _ in group} == rules_with_a_script()

    loaded = loaded_project_files(set(cases))
    for (script, modules), group in cases.items():
        assert any(path.endswith(".py") and path.startswith("latentaudit/") for path in loaded[script, modules])
        walked = imported_project_files(REPO / script, REPO, also_imports=modules)
        for rule, wildcards, inputs in group:
            missing = loaded[script, modules] - set(inputs)
            assert not missing, f"rule {rule} {wildcards}: {script} imports {sorted(missing)}, not among its inputs"
            # the code inputs are the walk of the script's imports, not a list kept by hand
            assert [path for path in inputs if path.startswith("latentaudit/")] == walked, (rule, wildcards)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))


def test_the_walk_follows_absolute_relative_package_and_function_level_imports(tmp_path):
    write_tree(tmp_path, {
        "scripts/job.py": "import yaml\nfrom pkg.a import thing\n",
        "pkg/__init__.py": "",
        "pkg/a.py": "import os\nfrom .b import thing\n",
        "pkg/b.py": """
            from . import c
            thing = 1

            def later():
                from .sub.d import value  # imported when called: still an input
                return value
            """,
        "pkg/c.py": "",
        "pkg/sub/__init__.py": "from ..e import *\n",
        "pkg/sub/d.py": "value = 1\n",
        "pkg/e.py": "import pkg.c\n",
        "pkg/registered.py": "",
        "pkg/unused.py": "",
    })
    walked = imported_project_files(tmp_path / "scripts/job.py", tmp_path)
    assert walked == ["pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/e.py", "pkg/sub/__init__.py",
                      "pkg/sub/d.py"]
    # a module the job imports by name (a registered method's) and what it imports
    (tmp_path / "pkg/registered.py").write_text("from .unused import *\n")
    assert imported_project_files(tmp_path / "scripts/job.py", tmp_path, also_imports=["pkg.registered"]) == sorted(
        walked + ["pkg/registered.py", "pkg/unused.py"])
    # an import added to a module the script reaches: the walk picks it up
    (tmp_path / "pkg/c.py").write_text("from .unused import *\n")
    assert "pkg/unused.py" in imported_project_files(tmp_path / "scripts/job.py", tmp_path)


def test_an_import_added_to_a_job_becomes_an_input_of_its_rule(tmp_path):
    """What the hand-kept lists missed: a module the attack job starts to import reruns the attacks."""
    workdir = copy_repo(tmp_path / "repo")
    target = ("--configfile", "configs/smoke.yaml", "--", "results/attacks/organism/aligned/none/generations.parquet")

    def attack_inputs():
        return [inputs for rule, _, inputs in dry_run_job_inputs(workdir, *target) if rule == "attack"][0]

    before = attack_inputs()
    assert "latentaudit/provenance.py" in before and "latentaudit/bench.py" not in before
    attack_job = workdir / "latentaudit/jobs/attacks.py"
    attack_job.write_text(attack_job.read_text() + "\nfrom ..bench import BenchSettings  # noqa: E402,F401\n")
    assert "latentaudit/bench.py" in attack_inputs()


def test_editing_the_tables_code_rebuilds_no_model_and_rejudges_nothing():
    """The tables (latentaudit/metrics.py, jobs/scoring.py) are the code inputs of the report's rules
    only: a build (LAPT reads LASR by layer) reads the success rates from attack_success, and the
    judge rule's job (jobs/judging.py) is apart from the metrics job's, so an edit of a table neither
    rebuilds every defense and reruns its attacks nor re-judges every generation (with a model judge
    on a cluster, hours)."""
    load_all()
    tables = {"latentaudit/metrics.py", "latentaudit/jobs/scoring.py", "latentaudit/capability.py"}
    for registry, script in ((VARIANTS, "workflow_scripts/build_variant.py"), (ATTACKS, "workflow_scripts/attack.py"),
                             (JUDGES, "workflow_scripts/judge.py")):
        for name, entry in registry.items():
            files = imported_project_files(REPO / script, REPO, also_imports=(entry.function.__module__,))
            assert not tables & set(files), (script, name, sorted(tables & set(files)))
    assert "latentaudit/attack_success.py" in imported_project_files(
        REPO / "workflow_scripts/build_variant.py", REPO, also_imports=(VARIANTS["lapt"].function.__module__,))
