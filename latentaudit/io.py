"""Reading and writing the pipeline's record files."""
from __future__ import annotations

import json
from pathlib import Path

# With row_id, these identify a generation across the generations and score files.
GENERATION_KEYS = ["model", "variant", "attack"]


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_jsonl(records: list[dict], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))
