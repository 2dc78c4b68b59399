import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from tasks import download
from tasks.archive import ArchiveError, detect_layout
from tasks.download import ChecksumError, Source
from tests.conftest import image_folder_files, official_files, write_tar, write_zip


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(source: Source, tmp_path: Path) -> Path:
    """The download flow's steps, called as plain functions."""
    partial = download.fetch_archive(source, tmp_path / "partial")
    layout = download.check_archive(partial, source)
    return download.publish(partial, source, layout, tmp_path / "raw")


# ----------------------------------------------------------------------------- layouts

def test_image_folder_tar_under_a_top_folder(tmp_path):
    archive = write_tar(tmp_path / "a.tar.gz", image_folder_files(top="cifar"))
    layout = detect_layout(archive)
    assert (layout.kind, layout.prefix) == ("image-folder", "cifar")
    assert layout.files["train"] == {"cat": 6, "dog": 6, "frog": 6}


def test_image_folder_zip_at_top_level(tmp_path):
    archive = write_zip(tmp_path / "a.zip", image_folder_files(top=""))
    assert (detect_layout(archive).kind, detect_layout(archive).prefix) == ("image-folder", "")


def test_official_layout(tmp_path):
    archive = write_tar(tmp_path / "cifar-10-python.tar.gz", official_files())
    layout = detect_layout(archive)
    assert (layout.kind, layout.prefix) == ("cifar-python", "cifar-10-batches-py")


@pytest.mark.parametrize(("files", "dirs", "message"), [
    ({"x/readme.txt": b"hi"}, (), "wrong layout"),
    ({k: v for k, v in image_folder_files().items() if "/test/" not in k}, (), "'test' is missing"),
    ({k: v for k, v in image_folder_files().items() if "/test/dog" not in k}, (),
     "'test' has no images of class(es) ['dog']"),
    (image_folder_files(), ("images/train/bird/",), "empty class folder(s) ['bird']"),
    ({k: v for k, v in official_files().items() if "data_batch_3" not in k}, (), "['data_batch_3'] missing"),
])
def test_bad_layouts_name_the_file_and_problem(tmp_path, files, dirs, message):
    archive = write_tar(tmp_path / "bad.tar.gz", files, dirs=dirs)
    with pytest.raises(ArchiveError) as error:
        detect_layout(archive)
    assert str(archive) in str(error.value) and message in str(error.value)


@pytest.mark.parametrize(("files", "links", "message"), [
    ({"../evil.png": b"x"}, (), "unsafe member path '../evil.png'"),
    ({"/etc/evil.png": b"x"}, (), "unsafe member path '/etc/evil.png'"),
    ({}, (("images/train/cat/link.png", "../../../../etc/passwd"),), "link pointing outside"),
])
def test_unsafe_members_are_refused(tmp_path, files, links, message):
    archive = write_tar(tmp_path / "evil.tar.gz", {**image_folder_files(), **files}, links=links)
    with pytest.raises(ArchiveError, match=message.replace("(", r"\(").replace(")", r"\)")):
        detect_layout(archive)


def test_truncated_archive(tmp_path):
    good = write_tar(tmp_path / "a.tar.gz", image_folder_files())
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ArchiveError, match=r"cut.tar.gz: truncated or corrupt"):
        detect_layout(cut)


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello" * 100)
    with pytest.raises(ArchiveError, match="not a tar, tar.gz or zip"):
        detect_layout(junk)


# ----------------------------------------------------------------------------- local sources

def test_local_source_is_verified_and_published(tmp_path):
    archive = write_tar(tmp_path / "a.tar.gz", image_folder_files())
    raw = fetch(Source(str(archive), sha256(archive)), tmp_path)
    assert (raw / "a.tar.gz").read_bytes() == archive.read_bytes()
    assert '"layout": "image-folder"' in (raw / "source.json").read_text()
    assert not (tmp_path / "partial").exists()


def test_checksum_mismatch_keeps_earlier_outputs(tmp_path):
    archive = write_tar(tmp_path / "a.tar.gz", image_folder_files())
    raw = fetch(Source(str(archive), sha256(archive)), tmp_path)
    before = sorted(p.name for p in raw.iterdir())
    with pytest.raises(ChecksumError, match="a.tar.gz.part: sha256 is .*, expected 0000"):
        fetch(Source(str(archive), "sha256:" + "0" * 64), tmp_path)
    assert sorted(p.name for p in raw.iterdir()) == before
    assert (raw / "a.tar.gz").read_bytes() == archive.read_bytes()


def test_wrong_layout_names_the_source_and_keeps_earlier_outputs(tmp_path):
    good = write_tar(tmp_path / "a.tar.gz", image_folder_files())
    raw = fetch(Source(str(good), ""), tmp_path)
    bad = write_tar(tmp_path / "b.tar.gz", {"docs/readme.txt": b"x"})
    with pytest.raises(ArchiveError, match=f"{bad}: wrong layout"):
        fetch(Source(str(bad), ""), tmp_path)
    assert (raw / "a.tar.gz").exists()


def test_missing_local_source_falls_back(params, tmp_path):
    archive = write_tar(tmp_path / "a.tar.gz", image_folder_files())
    data = params.data.model_copy(update={"source": str(tmp_path / "absent.tar.gz"),
                                          "fallback_source": str(archive)})
    assert download.choose_source(data).location == str(archive)
    no_fallback = data.model_copy(update={"fallback_source": ""})
    with pytest.raises(FileNotFoundError, match="absent.tar.gz: data source not found"):
        download.fetch_archive(download.choose_source(no_fallback), tmp_path / "partial")


# ----------------------------------------------------------------------------- http sources

class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload with Range support; can cut the first response short."""

    payload = b""
    cut_first_at = None
    requests: list = []

    def do_GET(self):  # noqa: N802
        type(self).requests.append(self.headers.get("Range"))
        start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_first_at is not None and len(type(self).requests) == 1:
            self.wfile.write(body[: type(self).cut_first_at])
            return  # the connection closes early, as a dropped download would
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_archive(tmp_path):
    archive = write_tar(tmp_path / "served.tar.gz", image_folder_files())
    handler = type("Handler", (_RangeHandler,), {"payload": archive.read_bytes(), "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield archive, handler, f"http://127.0.0.1:{server.server_port}/served.tar.gz"
    server.shutdown()


def test_url_download_verifies_checksum(tmp_path, http_archive):
    archive, _, url = http_archive
    raw = fetch(Source(url, sha256(archive)), tmp_path)
    assert (raw / "served.tar.gz").read_bytes() == archive.read_bytes()


def test_interrupted_download_resumes_with_a_range_request(tmp_path, http_archive):
    archive, handler, url = http_archive
    handler.cut_first_at = 1000
    source = Source(url, sha256(archive))
    with pytest.raises(OSError, match="connection closed after 1000 of"):
        download.fetch_archive(source, tmp_path / "partial")
    partial = download.fetch_archive(source, tmp_path / "partial")  # the flow's retry
    assert partial.read_bytes() == archive.read_bytes()
    assert handler.requests == [None, "bytes=1000-"]


def test_unreachable_url_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="127.0.0.1:9/x.tar.gz: cannot connect"):
        download.fetch_archive(Source("http://127.0.0.1:9/x.tar.gz", ""), tmp_path)
