import gzip
import hashlib
import io
import json
import re
import tarfile
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


@pytest.mark.parametrize(("files", "links", "special", "message"), [
    ({"../evil.png": b"x"}, (), (), "unsafe member path '../evil.png'"),
    ({"/etc/evil.png": b"x"}, (), (), "unsafe member path '/etc/evil.png'"),
    ({}, (("images/train/cat/link.png", "../../../../etc/passwd"),), (), "link pointing outside"),
    ({}, (), (("images/train/cat/hard.png", tarfile.LNKTYPE, "../../../etc/passwd"),), "link pointing outside"),
    ({}, (), (("images/train/cat/hard.png", tarfile.LNKTYPE, "/etc/passwd"),), "link pointing outside"),
    ({}, (), (("images/train/cat/tty.png", tarfile.CHRTYPE, ""),), "'images/train/cat/tty.png' is a device"),
    ({}, (), (("images/train/cat/disk.png", tarfile.BLKTYPE, ""),), "'images/train/cat/disk.png' is a device"),
    ({}, (), (("images/train/cat/pipe.png", tarfile.FIFOTYPE, ""),), "'images/train/cat/pipe.png' is a device"),
])
def test_unsafe_tar_members_are_refused(tmp_path, files, links, special, message):
    archive = write_tar(tmp_path / "evil.tar.gz", {**image_folder_files(), **files}, links=links, special=special)
    with pytest.raises(ArchiveError, match=re.escape(message)):
        detect_layout(archive)


@pytest.mark.parametrize(("files", "links", "message"), [
    ({"../evil.png": b"x"}, (), "unsafe member path '../evil.png'"),
    ({"images/train/../../evil.png": b"x"}, (), "unsafe member path 'images/train/../../evil.png'"),
    ({"/etc/evil.png": b"x"}, (), "unsafe member path '/etc/evil.png'"),
    ({"..\\evil.png": b"x"}, (), "unsafe member path '..\\\\evil.png'"),
    ({"C:/evil.png": b"x"}, (), "unsafe member path 'C:/evil.png'"),
    ({}, (("images/train/cat/link.png", "../../../../etc/passwd"),), "link pointing outside"),
    ({}, (("images/train/cat/link.png", "/etc/passwd"),), "link pointing outside"),
])
def test_unsafe_zip_members_are_refused(tmp_path, files, links, message):
    archive = write_zip(tmp_path / "evil.zip", {**image_folder_files(), **files}, links=links)
    with pytest.raises(ArchiveError, match=re.escape(message)):
        detect_layout(archive)


def test_links_inside_the_archive_are_skipped_not_followed(tmp_path):
    files = image_folder_files()
    archive = write_tar(tmp_path / "a.tar.gz", files, links=[("images/train/cat/alias.png", "0000.png")],
                        special=[("images/train/cat/hard.png", tarfile.LNKTYPE, "images/train/cat/0000.png")])
    assert detect_layout(archive).files["train"]["cat"] == 6  # only the six regular files


def test_data_under_several_top_folders_is_refused(tmp_path):
    files = {**image_folder_files(top="a"), **image_folder_files(top="b")}
    with pytest.raises(ArchiveError, match=re.escape("data under several top-level folders ['a', 'b']")):
        detect_layout(write_tar(tmp_path / "two.tar.gz", files))


def test_a_class_only_in_the_test_split_is_refused(tmp_path):
    files = {**image_folder_files(), "images/test/bird/0000.png": image_folder_files()["images/test/cat/0000.png"]}
    with pytest.raises(ArchiveError, match=re.escape("test classes ['bird'] do not occur in train")):
        detect_layout(write_tar(tmp_path / "a.tar.gz", files))


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
    with pytest.raises(ChecksumError, match=f"^{archive}: sha256 is .*, expected 0000"):
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
    with pytest.raises(download.DownloadError, match="absent.tar.gz: data source not found"):
        download.fetch_archive(download.choose_source(no_fallback), tmp_path / "partial")


# ----------------------------------------------------------------------------- http sources

@pytest.fixture
def http_archive(tmp_path, serve):
    archive = write_tar(tmp_path / "served.tar.gz", image_folder_files())
    handler, url = serve(archive)
    return archive, handler, url


def test_url_download_verifies_checksum(tmp_path, http_archive):
    archive, _, url = http_archive
    raw = fetch(Source(url, sha256(archive)), tmp_path)
    assert (raw / "served.tar.gz").read_bytes() == archive.read_bytes()


@pytest.mark.parametrize("checksum", [True, False])
def test_interrupted_download_resumes_with_a_range_request(tmp_path, http_archive, checksum):
    archive, handler, url = http_archive
    handler.cut_first_at = 1000
    source = Source(url, sha256(archive) if checksum else "")
    with pytest.raises(download.DownloadError, match="connection closed after 1000 of"):
        download.fetch_archive(source, tmp_path / "partial")
    partial = download.fetch_archive(source, tmp_path / "partial")  # the flow's retry
    assert partial.read_bytes() == archive.read_bytes()
    assert handler.requests == [None, "bytes=1000-"]


def test_a_server_that_ignores_range_sends_the_file_whole(tmp_path, http_archive):
    archive, handler, url = http_archive
    handler.cut_first_at, handler.honour_range = 1000, False
    source = Source(url, sha256(archive))
    with pytest.raises(download.DownloadError):
        download.fetch_archive(source, tmp_path / "partial")
    partial = download.fetch_archive(source, tmp_path / "partial")
    assert partial.read_bytes() == archive.read_bytes()  # not the first 1000 bytes twice
    assert handler.requests == [None, "bytes=1000-"]


def test_a_416_answer_starts_over_at_once(tmp_path, http_archive):
    archive, handler, url = http_archive
    partial = tmp_path / "partial" / "served.tar.gz.part"
    partial.parent.mkdir()
    partial.write_bytes(b"x" * (len(archive.read_bytes()) + 10))  # longer than the file: not of it
    (partial.parent / "served.tar.gz.part.json").write_text(json.dumps({"url": url, "validator": ""}))
    got = download.fetch_archive(Source(url, sha256(archive)), tmp_path / "partial")
    assert got.read_bytes() == archive.read_bytes()
    assert handler.requests == [f"bytes={len(archive.read_bytes()) + 10}-", None]


def test_a_stale_partial_without_checksum_is_not_resumed(tmp_path, http_archive, capsys):
    """Bytes of an unknown origin (no checksum to verify, no validator from the server) are never
    prepended to the download: without a checksum nothing would catch the mixed file."""
    archive, handler, url = http_archive
    partial = tmp_path / "partial" / "served.tar.gz.part"
    partial.parent.mkdir()
    partial.write_bytes(b"stale bytes of another file")
    got = download.fetch_archive(Source(url, ""), tmp_path / "partial")
    assert got.read_bytes() == archive.read_bytes() and handler.requests == [None]
    assert "cannot be verified; starting over" in capsys.readouterr().out


def test_a_partial_of_a_changed_file_is_replaced_through_if_range(tmp_path, http_archive):
    archive, handler, url = http_archive
    handler.cut_first_at = 1000
    with pytest.raises(download.DownloadError):
        download.fetch_archive(Source(url, ""), tmp_path / "partial")
    handler.etag = '"v2"'  # the file on the server changed between the attempts
    got = download.fetch_archive(Source(url, ""), tmp_path / "partial")
    assert got.read_bytes() == archive.read_bytes()
    assert handler.requests == [None, "bytes=1000-"]  # asked to resume; the server sent it whole


def test_unreachable_url_is_a_clear_error(tmp_path):
    with pytest.raises(download.DownloadError, match="127.0.0.1:9/x.tar.gz: cannot connect"):
        download.fetch_archive(Source("http://127.0.0.1:9/x.tar.gz", ""), tmp_path)


def test_http_error_names_url_and_status(tmp_path, http_archive):
    _, handler, url = http_archive
    handler.fail_with = 503
    with pytest.raises(download.DownloadError, match=f"{url}: HTTP 503 Service Unavailable$"):
        download.fetch_archive(Source(url, ""), tmp_path)


def test_a_relative_source_is_read_from_the_project_in_a_temporary_workspace(params, tmp_path, monkeypatch):
    archive = write_tar(tmp_path / "mirror.tar.gz", image_folder_files())
    project = tmp_path / "project"
    workspace = project / ".dvc" / "tmp" / "exps" / "tmpk3x9"
    workspace.mkdir(parents=True)
    data = params.data.model_copy(update={"source": "../mirror.tar.gz", "fallback_source": ""})
    monkeypatch.chdir(workspace)  # a stage of `dvc exp run --temp`
    assert Path(download.choose_source(data).location).resolve() == archive.resolve()
    monkeypatch.chdir(project)  # a stage of `dvc repro`: the path as given
    assert download.choose_source(data).location == "../mirror.tar.gz"


@pytest.mark.parametrize("compress", [False, True])
def test_an_archive_cut_between_two_members_is_truncated_not_incomplete(tmp_path, compress):
    """tarfile reads such an archive without complaint; only the missing end-of-archive marker
    tells that it was cut off (and it must not be reported as a split or a class missing)."""
    full = io.BytesIO()
    with tarfile.open(fileobj=full, mode="w") as tar:
        for name, data in image_folder_files().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(fileobj=io.BytesIO(full.getvalue())) as tar:
        members = tar.getmembers()
    cut = full.getvalue()[:members[len(members) // 2].offset]  # right where a header starts
    archive = tmp_path / ("cut.tar.gz" if compress else "cut.tar")
    archive.write_bytes(gzip.compress(cut) if compress else cut)
    with pytest.raises(ArchiveError, match=r"cut.tar(.gz)?: truncated or corrupt archive \(it ends before"):
        detect_layout(archive)
