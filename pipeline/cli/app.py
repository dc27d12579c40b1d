"""The `litelora` application and what every command shares: one mapping from errors to exit codes and one-line
messages, option parsing, progress, connections."""

from __future__ import annotations

import errno
import functools
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from pipeline import PRODUCT
from pipeline.errors import USER_ERRORS
from pipeline.methods import DEFAULT_METHOD
from pipeline.settings import load_settings
from pipeline.shutdown import exit_code, sigterm_interrupts

app = typer.Typer(
    help="LiteLoRA Pipeline: continual fine-tuning with gated low-rank adapter sets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
EXIT_FAILED = 1
# A full disk or a directory we may not write (state directory, cache) is the user's to fix: one line, not a trace.
STATE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
JSON = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def command(fn):
    """Register `fn` as a command whose known failures end in one line on stderr and exit 1 (LITELORA_DEBUG=1: the
    traceback instead)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        sigterm_interrupts()
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as e:
            if str(e):  # an interrupt that says what was kept, e.g. where a search resumes
                log(str(e))
            raise typer.Exit(exit_code(e)) from None
        except (typer.Exit, click.ClickException):  # an exit code or usage error already decided
            raise
        except USER_ERRORS as e:
            if load_settings().debug:
                raise
            fail(str(e))

    return app.command()(run)


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Characters that steer a terminal (escape sequences, carriage returns, bidirectional overrides): never echoed
as they are, because task names, labels, keys and reasons come from drops."""


def printable(text: str) -> str:
    """`text` with every terminal control character shown as its escape (`\\x1b`), newlines and tabs kept."""
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))


def echo(text: str = "") -> None:
    """One line (or block) on stdout, control characters shown as escapes."""
    typer.echo(printable(text))


def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(printable(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_FAILED)


def log(message: str) -> None:
    err.print(escape(printable(message)), highlight=False, soft_wrap=True)


def echo_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))  # JSON escapes control characters itself


def csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def version_option(value: str | None) -> str | None:
    """Typer callback: "3", "v3" → "3"."""
    from pipeline.registry.lineage import LineageError, parse_version

    try:
        return None if value is None else parse_version(value)
    except LineageError as e:
        raise typer.BadParameter(str(e)) from None


def check_heads(value: str | None) -> str | None:
    from pipeline.learn.head_options import HEAD_OPTIONS

    unknown = sorted(set(csv(value or "")) - set(HEAD_OPTIONS))
    if unknown:
        raise typer.BadParameter(f"unknown head option(s) {unknown}; choose from {', '.join(HEAD_OPTIONS)}")
    return value


class Description(ProgressColumn):
    """A task's description as plain text (it names tasks and files from drops: no markup, no control codes)."""

    def render(self, task) -> Text:
        return Text(printable(task.description))


def progress_bar(total_known: bool = True) -> Progress:
    counter = (BarColumn(), MofNCompleteColumn()) if total_known else (SpinnerColumn(),)
    return Progress(Description(), *counter, TimeElapsedColumn(), console=err, transient=False)


EPOCHS = Annotated[int | None, typer.Option(help="Epochs per task (phase 1).")]
SPARSITY = Annotated[float | None, typer.Option(help="LiteLoRA sparsity weight λ.")]
FIRST_EXAMPLES = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Examples the first task of a lineage trains on, in whole epochs (at most 10 × the epochs; 0: just the "
        "epochs). Default 3000.",
    ),
]


def train_config(
    method: str = DEFAULT_METHOD, epochs=None, sparsity=None, rank=None, head=None, first_examples=None
):
    from pipeline.learn.config import TrainConfig

    settings = load_settings()
    try:
        return (
            TrainConfig(device=settings.device)
            .with_overrides(head=settings.head)
            .running(method)
            .with_overrides(
                epochs=epochs, sparsity=sparsity, rank=rank, head=head, first_examples=first_examples
            )
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def check_stream(value: str | None) -> str | None:
    from pipeline.data.stream_names import StreamError, check_stream_name

    try:
        return None if value is None else check_stream_name(value)
    except StreamError as e:
        raise typer.BadParameter(str(e)) from None


def check_streams(values: list[str] | None) -> list[str] | None:
    return None if values is None else [check_stream(v) for v in values]


def streams_option(help: str):
    """A repeatable --stream option (watch, serve)."""
    return Annotated[list[str] | None, typer.Option("--stream", help=help, callback=check_streams)]


STREAM = Annotated[
    str | None,
    typer.Option(
        "--stream",
        help="The stream (independent lineage) to work on [default: LITELORA_STREAM, else default].",
        callback=check_stream,
    ),
]


def stream_for(option: str | None, dataset) -> str | None:
    """Where a dataset trains: --stream, else the stream its task.json names, else LITELORA_STREAM or default."""
    return option or dataset.info.get("stream")


def open_connection(stream: str | None = None):
    import logging

    from pipeline.settings import connection

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its per-run "View run at" lines are noise here
    return connection(stream=stream)


def open_registry(stream: str | None = None):
    from pipeline.registry.store import Registry

    return Registry.connect(open_connection(stream))


def command_line() -> str:
    return "litelora " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def main(argv: list[str] | None = None) -> None:
    """The console script: `app`, with file-system errors (disk full, permission denied) as one clear line."""
    try:
        app(args=argv, prog_name=PRODUCT)
    except OSError as e:
        home = load_settings().home
        in_home = e.filename is not None and Path(e.filename).is_relative_to(home)
        if e.errno not in STATE_ERRNOS and not (
            in_home and e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)
        ):
            raise
        err.print(
            f"[red]error:[/red] cannot write {e.filename or 'a file'}: {e.strerror} (state directory {home}; "
            "free some space, fix its permissions or point LITELORA_HOME elsewhere)",
            highlight=False,
            soft_wrap=True,
        )
        raise SystemExit(EXIT_FAILED) from None


if __name__ == "__main__":
    main()
