"""What every command shares: one-line errors with exit code 2, and a rich progress bar."""

import functools
import sys

import typer
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from modelzoo.errors import ZooError


def user_errors(fn):
    """Turn ``ZooError`` (and a missing file) into 'error: ...' on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ZooError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("interrupted: completed shards are kept; rerun to finish", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


class RateColumn(ProgressColumn):
    """Items per second, e.g. '3.2 models/s'."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:.2f} {self.unit}/s", style="cyan")


def progress_bar(unit: str) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(unit), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), transient=False)
