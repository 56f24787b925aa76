"""The README shows real code: a block it introduces with a file's path is that file."""
import re

from conftest import REPO

# "... `latentaudit/x.py` (...):" then a fenced Python block: the block is the whole file.
QUOTED_FILE = re.compile(r"`(latentaudit/[\w/]+\.py)`[^\n]*:\n\n```python\n(.*?)```\n", re.S)


def test_a_file_the_readme_quotes_is_quoted_verbatim():
    quoted = dict(QUOTED_FILE.findall((REPO / "README.md").read_text()))
    assert "latentaudit/attacks/clean.py" in quoted  # the smallest real example of adding a method
    for path, text in quoted.items():
        assert text == (REPO / path).read_text(), f"README.md's copy of {path} differs from the file"
