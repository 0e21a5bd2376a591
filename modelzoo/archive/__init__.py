"""The archive format, owned here and only here: manifest, flat-vector layout, shards, twins,
validation and safetensors export. Nothing in this package imports torch or any other part of
modelzoo except ``modelzoo.errors``, so reading, validating and sharing archives stays fast."""

from modelzoo.archive.layout import Layout
from modelzoo.archive.manifest import (DEFAULT_SHARD_SIZE, METRICS, Manifest, atomic_directory,
                                       sha256_file, shard_ranges, write_atomic, writing)
from modelzoo.archive.reader import ArchiveReader
from modelzoo.archive.shards import ModelRun
from modelzoo.archive.twins import Twins
from modelzoo.archive.validate import validate_archive
from modelzoo.archive.writer import ArchiveWriter

__all__ = ["DEFAULT_SHARD_SIZE", "METRICS", "ArchiveReader", "ArchiveWriter", "Layout", "Manifest",
           "ModelRun", "Twins", "atomic_directory", "sha256_file", "shard_ranges",
           "validate_archive", "write_atomic", "writing"]
