"""What every role's command line shares: logging set-up, quiet consoles, ``Error: ...``.

Quiet consoles: TensorFlow, LiteRT, MediaPipe and absl write INFO/WARNING lines from C++ straight
to file descriptor 2 (``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``, glog-style
``I0000 00:00:...`` / ``W0000 ...`` lines, ``WARNING: All log messages before absl::...``). The
environment variables (``TF_CPP_MIN_LOG_LEVEL``, ``GLOG_minloglevel``) silence TensorFlow's own,
but LiteRT's and MediaPipe's bundled runtimes ignore them, and no API turns them off. So
:func:`quiet_native_logs`, run by :func:`run_cli` before any of those libraries is imported, sets
the variables and routes fd 2 through a small forked filter process that drops native INFO and
WARNING lines and passes everything else (errors, fatal checks, our own lines) unchanged. Python's
``sys.stderr`` keeps writing to the real stderr directly. ``--verbose`` (anywhere on the command
line, or ``FEDVFER_VERBOSE=1``) turns all of it off; child processes inherit the choice.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading

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


#: Native log lines dropped from fd 2 unless verbose: tflite/LiteRT minimal logging
#: (``INFO: ...``, ``WARNING: ...``), glog/absl INFO and WARNING lines (``I1201 12:00:00.1 ...``,
#: ``W0000 00:00:1796157485.2 ...`` before absl is initialised), and the few ERROR lines TensorFlow
#: prints on every start of a CPU-only machine (no CUDA driver, no AVX-512 for oneDNN).
_GLOG = rb"\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]+\] "
NATIVE_NOISE = re.compile(
    rb"^(?:(?:INFO|WARNING|VERBOSE): |[IW]"
    + _GLOG
    + rb"|E"
    + _GLOG
    + rb"(?:failed call to cuInit|Unable to register cu|oneDNN supports ))"
)
VERBOSE_FLAG = "--verbose"
VERBOSE_ENV = "FEDVFER_VERBOSE"
_QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow C++: errors only
    "GLOG_minloglevel": "2",  # glog (MediaPipe graphs)
    "ABSL_MIN_LOG_LEVEL": "2",
}


def log_from_signal_handler(logger: logging.Logger, msg: str, *args: object) -> None:
    """Log ``msg`` at INFO from a signal handler, in a short thread of its own.

    A handler runs in the main thread between two bytecodes, possibly in the middle of that
    thread's own write of a log line to stderr; writing again from there fails ("reentrant call
    inside BufferedWriter"), logging prints "--- Logging error ---" and the line is lost. The
    thread instead waits for the handler's lock until that write is done. Not a daemon: the line
    is written even when the process exits right after.
    """
    threading.Thread(target=logger.info, args=(msg, *args), name="signal-log").start()


def is_native_noise(line: bytes) -> bool:
    return NATIVE_NOISE.match(line) is not None


def quiet_native_logs(argv: list[str]) -> list[str]:
    """Silence native log noise unless ``--verbose``; returns ``argv`` without that flag."""
    verbose = VERBOSE_FLAG in argv or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    args = [a for a in argv if a != VERBOSE_FLAG]
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        return args
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _filter_fd2()
    return args


def _filter_fd2() -> None:
    """Route fd 2 through a forked process that drops :data:`NATIVE_NOISE` lines.

    A process, not a thread, so a native crash's last lines still come out. It exits when every
    writer (this process and the children that inherited fd 2) has closed the pipe.
    """
    if getattr(_filter_fd2, "done", False) or not hasattr(os, "fork"):
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        return
    pid = os.fork()
    if pid == 0:  # the filter
        try:
            import signal

            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                # a signal to the whole process group (Ctrl-C, a supervisor) must not kill the
                # filter before the process it serves has written its last lines
                signal.signal(sig, signal.SIG_IGN)
            os.close(write_end)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1):  # hold nobody's stdout open: only the pipe decides when we end
                os.dup2(null, fd)
            os.dup2(real, 2)
            _pump(read_end, real)
        finally:
            os._exit(0)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    os.set_inheritable(2, True)
    # Python's own writes go to the real stderr, never through the filter
    sys.stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    _filter_fd2.done = True  # type: ignore[attr-defined]


def _pump(read_fd: int, out_fd: int) -> None:
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        _write_all(out_fd, b"".join(line + b"\n" for line in lines if not is_native_noise(line)))
    if not is_native_noise(pending):
        _write_all(out_fd, pending)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:  # the terminal went away: keep draining so writers never block
        pass


def run_cli(group: click.Group, prog_name: str) -> None:
    """Run a click group; operator errors become ``Error: ...`` and a non-zero exit.

    Native log noise is silenced first (:func:`quiet_native_logs`); ``--verbose`` keeps it.
    """
    args = quiet_native_logs(sys.argv[1:])
    if not any(p.name == "verbose" for p in group.params):
        group.params.append(
            click.Option(
                [VERBOSE_FLAG],
                is_flag=True,
                expose_value=False,
                help="show the native libraries' INFO/WARNING lines (TensorFlow, LiteRT, absl)",
            )
        )
    try:
        rc = group.main(args=args, prog_name=prog_name, standalone_mode=False)
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
