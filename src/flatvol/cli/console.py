"""The one console of the command line: every command's messages go to stderr through it
(rich markup; stdout is left to a command's output, such as `--json`)."""

from __future__ import annotations

from rich.console import Console

# rich resolves sys.stderr at each print, so a redirected or captured stderr is honoured.
console = Console(stderr=True)
