"""What every role's command line shares: logging set-up and ``Error: ...`` instead of tracebacks."""

from __future__ import annotations

import logging
import os
import sys

import click

from vfer.config_io import ConfigError


class UserError(Exception):
    """Something the operator can fix; printed as ``Error: <message>`` with exit status 1."""


#: Exceptions shown to the operator as one line. FEDVFER_DEBUG=1 shows the traceback instead.
OPERATOR_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError, ValueError, OSError)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_cli(group: click.Group, prog_name: str) -> None:
    """Run a click group; operator errors become ``Error: ...`` and a non-zero exit."""
    try:
        rc = group.main(prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OPERATOR_ERRORS as exc:
        if os.environ.get("FEDVFER_DEBUG"):
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)
