"""Stage 1: bring the dataset archive into `data/raw/`, verified, whatever its source.

A source is a local path or an http(s) URL. Downloads stream with a progress bar into a partial
file that survives an interruption and is resumed with an HTTP range request on the next attempt;
the checksum is verified and the layout checked before anything replaces the previous `data/raw/`.
Steps: `choose_source` -> `fetch_archive` -> `check_archive` -> `publish` (wired in flows/download.py).
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from tasks.archive import ArchiveError, Layout, detect_layout
from tasks.config import DataParams
from tasks.io import atomic_path, write_json

RAW_DIR = Path("data/raw")
PARTIAL_DIR = Path("data/raw.partial")  # outside DVC's outputs, so a retry can resume
CHUNK = 1 << 20


class ChecksumError(ValueError):
    """The file's digest is not the one the parameters promise."""


@dataclass(frozen=True)
class Source:
    location: str
    checksum: str  # "" or "md5:..." / "sha256:..."

    @property
    def is_url(self) -> bool:
        return urlparse(self.location).scheme in ("http", "https")

    @property
    def filename(self) -> str:
        name = Path(urlparse(self.location).path if self.is_url else self.location).name
        return name or "archive"


def choose_source(params: DataParams) -> Source:
    """The configured source, or the fallback when the source is a local path that is absent."""
    primary = Source(params.source, params.checksum)
    if primary.is_url or Path(primary.location).exists() or not params.fallback_source:
        return primary
    print(f"{primary.location} not found; using fallback {params.fallback_source}")
    return Source(params.fallback_source, params.fallback_checksum)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, checksum: str) -> None:
    """Raise `ChecksumError` naming the file unless its digest matches `algo:hex` ("" = skip)."""
    if not checksum:
        return
    algorithm, expected = checksum.split(":", 1)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(f"{path}: {algorithm} is {actual}, expected {expected}")


def _http_download(url: str, partial: Path) -> None:
    """Stream `url` into `partial`, resuming what an earlier attempt left there.

    One attempt: the flow retries it, and each retry continues the partial file.
    """
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # the partial file is complete already, or longer: start over
            partial.unlink(missing_ok=True)
        raise OSError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise OSError(f"{url}: cannot connect ({exc.reason})") from None
    with response:
        resumed = response.status == 206
        length = response.headers.get("Content-Length")
        total = int(length) + (have if resumed else 0) if length else None
        with (
            open(partial, "ab" if resumed else "wb") as out,
            tqdm(total=total, initial=have if resumed else 0, unit="B", unit_scale=True,
                 desc=f"download {Path(url).name}", disable=None) as bar,
        ):
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and partial.stat().st_size != total:
        raise OSError(f"{url}: connection closed after {partial.stat().st_size} of {total} bytes")


def fetch_archive(source: Source, partial_dir: Path = PARTIAL_DIR) -> Path:
    """Return a local, checksum-verified copy of the source archive in `partial_dir`."""
    partial_dir.mkdir(parents=True, exist_ok=True)
    partial = partial_dir / (source.filename + ".part")
    if source.is_url:
        _http_download(source.location, partial)
    else:
        path = Path(source.location)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: data source not found (data.source in params.yaml)")
        shutil.copyfile(path, partial)
    try:
        verify_checksum(partial, source.checksum)
    except ChecksumError:
        partial.unlink()  # a corrupt partial must not be resumed next time
        raise
    return partial


def check_archive(partial: Path, source: Source) -> Layout:
    """The archive's layout; errors name the source, not the temporary copy."""
    try:
        return detect_layout(partial)
    except ArchiveError as exc:
        raise ArchiveError(str(exc).replace(str(partial), source.location)) from None


def publish(partial: Path, source: Source, layout: Layout, raw_dir: Path = RAW_DIR) -> Path:
    """Replace `raw_dir` with the verified archive and its `source.json`, in one rename."""
    with atomic_path(raw_dir, directory=True) as tmp:
        archive = tmp / source.filename
        partial.replace(archive)
        write_json(tmp / "source.json", {
            "source": source.location,
            "file": archive.name,
            "sha256": file_digest(archive, "sha256"),
            "layout": layout.kind,
            "prefix": layout.prefix,
        })
    shutil.rmtree(partial.parent, ignore_errors=True)
    print(f"{raw_dir / source.filename}: {layout.kind} archive from {source.location}")
    return raw_dir
