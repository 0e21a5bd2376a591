"""What every command shares: one-line errors with exit code 2, the --device option and its
resolver, and a rich progress bar. Importing this module does not import torch."""

import functools
import sys

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
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


DEVICE_HELP = "cpu, cuda, cuda:N or auto (cuda when available)"


def resolve_device(device: str) -> str:
    """Validate a --device value ('cpu', 'cuda', 'cuda:N', 'auto') and resolve 'auto'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (device == "cpu" or device == "cuda" or
            (device.startswith("cuda:") and device[5:].isdigit())):
        raise ZooError(f"--device {device}: use {DEVICE_HELP}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ZooError(f"--device {device}: no CUDA device is available on this machine")
    return device


def check_choice(flag: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    """``value`` if it is one of ``choices``, else a one-line error naming the flag."""
    if value not in choices:
        raise ZooError(f"{flag} {value}: use {', '.join(choices[:-1])} or {choices[-1]}"
                       if len(choices) > 1 else f"{flag} {value}: use {choices[0]}")
    return value
