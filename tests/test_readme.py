"""The README's usage example runs and does what its comments say."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_usage_example_runs_and_stop_interrupts_the_reply_in_flight() -> None:
    """The async example prints the interrupted reply and the handled count."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = next(b for b in blocks if "asyncio.run(main())" in b)

    done = subprocess.run(
        [sys.executable, "-c", example],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("stopped by /stop:")
    assert "interrupted" in lines[0]
    assert lines[1].startswith("2 ")  # the first message and /stop were handled
