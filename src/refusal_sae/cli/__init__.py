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


INTERRUPTED = ("interrupted: stopped by Ctrl-C; run the same command again to resume (finished stages and results "
               "are kept)")


def _from_ctrl_c(exc: BaseException | None) -> bool:
    """Whether ``exc`` was caused by Ctrl-C: typer turns a KeyboardInterrupt into ``Exit(130)`` (older typer and
    click: ``Abort``, exit 1), so only the exception chain still says so."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except RefusalSaeError as e:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:  # outside a command (typer's own handling did not see it)
        _interrupted()
    except SystemExit as e:
        if _from_ctrl_c(e):
            _interrupted()
        raise


def _interrupted() -> None:
    # results are written atomically, stage by stage: what finished is on disk and a rerun skips it
    err.print(INTERRUPTED, soft_wrap=True, highlight=False, markup=False)
    sys.exit(130)
