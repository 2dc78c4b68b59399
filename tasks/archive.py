"""Reading untrusted dataset archives (tar, tar.gz, zip) without extracting them.

Members are read in archive order straight into memory, so nothing is ever written outside the
pipeline's own folders; a member whose path is absolute, climbs out with `..` or is a link that
points outside the archive is an error all the same, because such an archive is not what it claims.
"""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tasks.errors import PipelineError

# The official pickled archive's member names (cifar-10-batches-py/...).
OFFICIAL_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
OFFICIAL_TEST = "test_batch"
OFFICIAL_META = "batches.meta"
SPLITS = ("train", "test")


class ArchiveError(PipelineError, ValueError):
    """An archive that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Member:
    name: str  # normalised POSIX path inside the archive
    read: object  # zero-argument callable returning the member's bytes (files only)


@dataclass
class Layout:
    """What an archive holds: the official batches, or an image folder per split and class."""

    kind: str  # "cifar-python" or "image-folder"
    prefix: str = ""  # folder the data sits under inside the archive ("" = top level)
    files: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> file count


def _safe_name(archive: Path, name: str) -> str:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise ArchiveError(f"{archive}: unsafe member path {name!r} (absolute or '..')")
    return str(path)


def _check_link(archive: Path, name: str, target: str) -> None:
    resolved = PurePosixPath(name).parent / target
    if PurePosixPath(target).is_absolute() or ".." in PurePosixPath(str(resolved)).parts:
        raise ArchiveError(f"{archive}: member {name!r} is a link pointing outside ({target!r})")


def iter_members(archive: Path) -> Iterator[Member]:
    """Yield the regular files of a tar/tar.gz/zip archive in stored order, checking every path."""
    archive = Path(archive)
    try:
        if zipfile.is_zipfile(archive):
            yield from _iter_zip(archive)
        elif tarfile.is_tarfile(archive):
            yield from _iter_tar(archive)
        else:
            raise ArchiveError(f"{archive}: not a tar, tar.gz or zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise ArchiveError(f"{archive}: no such file") from None
        raise ArchiveError(f"{archive}: truncated or corrupt archive ({exc})") from None


def _iter_tar(archive: Path) -> Iterator[Member]:
    # "r|*" streams: one sequential pass, which is what a gzip-compressed tar is fast at.
    with tarfile.open(archive, mode="r|*") as tar:
        for info in tar:
            name = _safe_name(archive, info.name)
            if info.issym() or info.islnk():
                _check_link(archive, name, info.linkname)
                continue
            if info.isdir():
                yield Member(name + "/", None)
            elif info.isfile():
                data = tar.extractfile(info).read()
                yield Member(name, lambda data=data: data)
            else:
                raise ArchiveError(f"{archive}: member {name!r} is a device or fifo")
        # tarfile stops quietly where a header should be, whether the archive ends there with its
        # end-of-archive marker (two zero blocks; tarfile has read the first) or was cut off.
        marker = tar.fileobj.read(tarfile.BLOCKSIZE)
        if len(marker) < tarfile.BLOCKSIZE or marker.strip(b"\0"):
            raise ArchiveError(f"{archive}: truncated or corrupt archive (it ends before its end-of-archive marker)")


def _iter_zip(archive: Path) -> Iterator[Member]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = _safe_name(archive, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                _check_link(archive, name, zf.read(info).decode(errors="replace"))
                continue
            if info.is_dir():
                yield Member(name.rstrip("/") + "/", None)
            else:
                yield Member(name, lambda info=info: zf.read(info))


def _split_class(name: str) -> tuple[str, str, str, bool] | None:
    """(prefix, split, class, is_dir) for `[prefix/]split/class/file` or `.../split/class/`."""
    is_dir = name.endswith("/")
    parts = PurePosixPath(name.rstrip("/")).parts
    for i in (0, 1):
        if len(parts) == i + (2 if is_dir else 3) and parts[i] in SPLITS:
            return "/".join(parts[:i]), parts[i], parts[i + 1], is_dir
    return None


def detect_layout(archive: Path) -> Layout:
    """Read every member name once and tell which layout the archive has, or say what is wrong."""
    archive = Path(archive)
    names = [m.name for m in iter_members(archive)]
    official = {PurePosixPath(n).name: n for n in names if not n.endswith("/")}
    if all(b in official for b in (*OFFICIAL_TRAIN, OFFICIAL_TEST, OFFICIAL_META)):
        prefix = str(PurePosixPath(official[OFFICIAL_TEST]).parent)
        return Layout("cifar-python", "" if prefix == "." else prefix)
    if any(b in official for b in (*OFFICIAL_TRAIN, OFFICIAL_TEST)):
        missing = [b for b in (*OFFICIAL_TRAIN, OFFICIAL_TEST, OFFICIAL_META) if b not in official]
        raise ArchiveError(f"{archive}: official CIFAR-10 layout but {missing} missing")

    counts: dict[str, dict[str, int]] = {s: defaultdict(int) for s in SPLITS}
    prefixes = set()
    for name in names:
        found = _split_class(name)
        if found:
            prefix, split, cls, is_dir = found
            prefixes.add(prefix)
            counts[split][cls] += 0 if is_dir else 1
    if not prefixes:
        raise ArchiveError(
            f"{archive}: wrong layout: expected train/<class>/<image> and test/<class>/<image> "
            "(optionally under one top-level folder) or the official cifar-10-batches-py files"
        )
    if len(prefixes) > 1:
        raise ArchiveError(f"{archive}: data under several top-level folders {sorted(prefixes)}")
    for split in SPLITS:
        if not counts[split]:
            raise ArchiveError(f"{archive}: split {split!r} is missing")
        empty = sorted(c for c, n in counts[split].items() if n == 0)
        if empty:
            raise ArchiveError(f"{archive}: split {split!r} has empty class folder(s) {empty}")
    unknown = sorted(set(counts["test"]) - set(counts["train"]))
    if unknown:
        raise ArchiveError(f"{archive}: test classes {unknown} do not occur in train")
    missing = sorted(set(counts["train"]) - set(counts["test"]))
    if missing:
        raise ArchiveError(f"{archive}: split 'test' has no images of class(es) {missing}")
    return Layout("image-folder", prefixes.pop(), {s: dict(c) for s, c in counts.items()})
