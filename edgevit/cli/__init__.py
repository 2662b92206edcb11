"""The ``edgevit`` command line. One module per command; each is a thin shell around the library.

User mistakes (:class:`edgevit.errors.EdgevitError`) print one paragraph and exit 2; no tracebacks.
"""
from __future__ import annotations

import sys

import click

from ..errors import EdgevitError
from . import (  # noqa: F401  (each registers its commands on the group)
    agent,
    bench,
    compile,
    dataset,
    estimate,
    eval,
    profile,
    qat,
    quant_report,
    rtl,
    split,
    worker,
    zoo,
)
from ._group import cli
from ._ui import err


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="edgevit", standalone_mode=False)
    except EdgevitError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return e.exit_code
    except click.exceptions.Abort:
        err.print("aborted")
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted; nothing was written")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
