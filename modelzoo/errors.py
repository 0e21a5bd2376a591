"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class ZooError(Exception):
    """Bad input from the user (spec, data folder, archive); the message is shown as is."""


class ArchiveCorrupt(ZooError):
    """An archive failed a consistency check (checksum, shape, NaN); names the broken item."""


def validation_error_line(exc, source: str) -> str:
    """One line for a pydantic ``ValidationError``: the source, the key path and the message."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-after", "list[",
                                                                           "RangeFactor",
                                                                           "RandomFactor")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{source}: {where}: {msg}" if where else f"{source}: {msg}"
