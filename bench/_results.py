"""Shared by the benchmarks: replace one `## ` section of bench/RESULTS.md (or append it)."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(section: str, text: str) -> None:
    """Replace the section of RESULTS.md that starts with the heading `section` by `text`.

    Args:
        section: the section's heading line, e.g. "## Volume: EP vs GPy".
        text: the new section, heading included.
    """
    body = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    start = body.find(section)
    if start >= 0:
        nxt = body.find("\n## ", start + len(section))
        body = body[:start] + text + ("" if nxt < 0 else body[nxt:])
    else:
        body = body.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(body.rstrip("\n") + "\n")
