"""What every bench script does with its figures: write them as JSON and say where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(path: Path, summary: dict[str, Any]) -> None:
    """Write ``summary`` to ``path`` as indented JSON (folders made as needed) and print the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    print(f"wrote {path}")
