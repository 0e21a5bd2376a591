"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class ZooError(Exception):
    """Bad input from the user (spec, data folder, archive); the message is shown as is."""


class ArchiveCorrupt(ZooError):
    """An archive failed a consistency check (checksum, shape, NaN); names the broken item."""
