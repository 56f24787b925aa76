"""The suite's own scheduling (tests/conftest.py): under `make test` every test but the default
experiment's yields the CPU to it, and what it starts inherits that."""
import os
import subprocess
import sys

from conftest import BACKGROUND_NICE


def test_a_test_beside_the_default_experiment_and_what_it_starts_yield_the_cpu():
    assert os.nice(0) >= BACKGROUND_NICE
    child = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"], capture_output=True, text=True,
                           check=True)
    assert int(child.stdout) >= BACKGROUND_NICE
