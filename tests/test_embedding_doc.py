"""docs/embedding.md: its complete example runs, as written, in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "embedding.md"
MARKER = "<!-- embedding-example -->"


def _example() -> str:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(MARKER) == 1, "docs/embedding.md must mark exactly one example"
    after = text.split(MARKER, 1)[1]
    match = re.match(r"\s*```python\n(.*?)\n```", after, re.DOTALL)
    assert match, "the marker must be followed by a ```python block"
    return match.group(1)


def test_embedding_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_example(), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # no conf/ here: nothing but the example's own config is used
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"listening on http://127\.0\.0\.1:\d+", lines[0]), lines
    assert not lines[0].endswith(":0")
    assert lines[1] == "answer: Hello from the embedded gateway! You said: ping"
    assert lines[2:] == ["stopped"]
    assert "Traceback" not in result.stderr
