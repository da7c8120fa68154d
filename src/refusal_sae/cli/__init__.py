"""``refusal-sae`` command line: parses options, calls the library, prints.

One module per stage registers its commands on the shared typer ``app``. User mistakes
(:class:`RefusalSaeError`) become one line on stderr and exit code 2; anything else keeps its traceback.
"""

from __future__ import annotations

import os
import sys

from refusal_sae.cli import analysis, direction, evaluate, finetune, harden, interactions, judges, run, saes, search  # noqa: F401  (register commands)
from refusal_sae.cli.common import app, err
from refusal_sae.errors import RefusalSaeError

__all__ = ["app", "main"]


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except RefusalSaeError as e:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True, highlight=False)
        sys.exit(2)
