"""Stage 1: bring the dataset archive into `data/raw/`, verified, whatever its source.

A source is a local path or an http(s) URL. Downloads stream with a progress bar into a partial
file that survives an interruption and is resumed with an HTTP range request on the next attempt;
the checksum is verified and the layout checked before anything replaces the previous `data/raw/`.
Steps: `choose_source` -> `fetch_archive` -> `check_archive` -> `publish` (wired in flows/download.py).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from tasks.archive import ArchiveError, Layout, detect_layout
from tasks.config import DataParams
from tasks.errors import PipelineError
from tasks.io import atomic_path, write_json
from tasks.paths import project_dir

CHUNK = 1 << 20


class ChecksumError(PipelineError, ValueError):
    """The file's digest is not the one the parameters promise."""


class DownloadError(PipelineError, OSError):
    """The source could not be fetched; the message names the URL or path and the cause."""


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


def _from_project(location: str) -> str:
    """A relative local path is relative to the project, also when a stage runs in a temporary
    experiment workspace (tasks/paths.py: project_dir)."""
    project = project_dir()
    if Source(location, "").is_url or Path(location).is_absolute() or project == Path.cwd().resolve():
        return location
    return str(project / location)


def choose_source(params: DataParams) -> Source:
    """The configured source, or the fallback when the source is a local path that is absent."""
    primary = Source(_from_project(params.source), params.checksum)
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


def _request(url: str, headers: dict[str, str]):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and "Range" in headers:
            return None  # the range starts past the end: the partial file is not of this file
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"{url}: cannot connect ({exc.reason})") from None
    except TimeoutError:
        raise DownloadError(f"{url}: no answer within 60 s") from None


def _http_download(url: str, partial: Path, verifiable: bool) -> None:
    """Stream `url` into `partial`, resuming what an earlier attempt left there when that is safe.

    Resuming appends to an earlier attempt's bytes, so it happens only when they are known to be
    of the same file: the server says so (an If-Range request with the ETag or Last-Modified it
    sent with them, remembered in `<partial>.json`), or the checksum is verified afterwards
    (`verifiable`). Otherwise, and when the server ignores the range, the download starts over.
    One attempt: the flow retries it, and each retry continues the partial file.
    """
    origin = partial.with_name(partial.name + ".json")
    saved = json.loads(origin.read_text()) if origin.exists() else {}
    have = partial.stat().st_size if partial.exists() else 0
    headers = {}
    if have and saved.get("url") == url and (saved.get("validator") or verifiable):
        headers = {"Range": f"bytes={have}-"}
        if saved.get("validator"):
            headers["If-Range"] = saved["validator"]
    elif have:
        print(f"{partial}: left by an earlier download that cannot be verified; starting over")
    response = _request(url, headers)
    if response is None:
        print(f"{url}: the server has fewer than the {have} bytes already here; starting over")
        response = _request(url, {})
    with response:
        resumed = response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            raise DownloadError(f"{url}: asked for bytes {have}- but got {response.headers.get('Content-Range')}")
        if not resumed:
            validator = response.headers.get("ETag", "")
            if not validator or validator.startswith("W/"):  # a weak ETag cannot guard a range
                validator = response.headers.get("Last-Modified", "")
            write_json(origin, {"url": url, "validator": validator})
        length = response.headers.get("Content-Length")
        total = int(length) + (have if resumed else 0) if length else None
        with (
            open(partial, "ab" if resumed else "wb") as out,
            tqdm(total=total, initial=have if resumed else 0, unit="B", unit_scale=True,
                 desc=f"download {Path(url).name}", disable=None) as bar,
        ):
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"{url}: connection lost after {out.tell()} bytes ({exc})") from None
    if total is not None and partial.stat().st_size != total:
        raise DownloadError(f"{url}: connection closed after {partial.stat().st_size} of {total} bytes")


def fetch_archive(source: Source, partial_dir: Path) -> Path:
    """Return a local, checksum-verified copy of the source archive in `partial_dir`."""
    partial_dir.mkdir(parents=True, exist_ok=True)
    partial = partial_dir / (source.filename + ".part")
    if source.is_url:
        _http_download(source.location, partial, verifiable=bool(source.checksum))
    else:
        path = Path(source.location)
        if not path.is_file():
            raise DownloadError(f"{path}: data source not found (data.source in params.yaml)")
        shutil.copyfile(path, partial)
    try:
        verify_checksum(partial, source.checksum)
    except ChecksumError as exc:
        partial.unlink()  # a corrupt partial must not be resumed next time
        raise ChecksumError(str(exc).replace(str(partial), source.location)) from None
    return partial


def check_archive(partial: Path, source: Source) -> Layout:
    """The archive's layout; errors name the source, not the temporary copy."""
    try:
        return detect_layout(partial)
    except ArchiveError as exc:
        raise ArchiveError(str(exc).replace(str(partial), source.location)) from None


def publish(partial: Path, source: Source, layout: Layout, raw_dir: Path) -> Path:
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
