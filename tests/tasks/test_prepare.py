import io
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from tasks import download, prepare
from tasks.archive import ArchiveError
from tasks.download import Source
from tasks.paths import Paths
from tasks.tables import read_prepared
from tests.conftest import class_images, image_folder_files, official_files, png_bytes, write_tar, write_zip


def prepared(tmp_path, files, writer=write_tar, name="a.tar.gz", size=32):
    archive = writer(tmp_path / name, files)
    source = Source(str(archive), "")
    partial = download.fetch_archive(source, tmp_path / "partial")
    raw = download.publish(partial, source, download.check_archive(partial, source), tmp_path / "raw")
    summary = prepare.write_prepared(prepare.read_archive(raw, size, workers=1), Paths(tmp_path))
    return summary, Paths(tmp_path).prepared


@pytest.mark.parametrize("writer", [write_tar, write_zip])
def test_image_folder_round_trip(tmp_path, writer):
    summary, out = prepared(tmp_path, image_folder_files(), writer, "a." + ("zip" if writer is write_zip else "tar"))
    pixels, labels, classes = read_prepared(out / "train.parquet")
    assert classes == ["cat", "dog", "frog"]  # sorted folder names for a non-CIFAR set
    assert pixels.shape == (18, 32, 32, 3) and pixels.dtype == np.uint8
    expected, _ = class_images(3, 9)
    assert np.array_equal(pixels[0], expected[0])  # PNG is lossless: exact pixels
    assert labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert summary["train"]["per_class"] == {"cat": 6, "dog": 6, "frog": 6}
    assert summary["test"]["images"] == 9
    assert json.loads((out / "summary.json").read_text()) == summary


def test_cifar10_classes_follow_the_official_order(tmp_path):
    names = ("truck", "ship", "horse", "frog", "dog", "deer", "cat", "bird", "automobile", "airplane")
    _, out = prepared(tmp_path, image_folder_files(classes=names, per_class=(1, 1)))
    assert read_prepared(out / "test.parquet")[2] == list(prepare.CIFAR10_CLASSES)


def test_other_sizes_and_modes_are_converted_and_counted(tmp_path):
    files = image_folder_files(per_class=(2, 1))
    files["images/train/cat/big.png"] = png_bytes(np.zeros((48, 40, 3), np.uint8))
    files["images/train/dog/grey.png"] = png_bytes(np.zeros((32, 32, 3), np.uint8), mode="L")
    files["images/train/dog/notes.txt"] = b"not an image"
    summary, out = prepared(tmp_path, files)
    assert (summary["resized"], summary["converted"], summary["skipped"]) == (1, 1, 1)
    assert read_prepared(out / "train.parquet")[0].shape == (8, 32, 32, 3)


def test_configured_image_size(tmp_path):
    _, out = prepared(tmp_path, image_folder_files(per_class=(1, 1)), size=16)
    assert read_prepared(out / "train.parquet")[0].shape == (3, 16, 16, 3)


def test_official_batches(tmp_path):
    files = official_files(per_batch=4)
    summary, out = prepared(tmp_path, files, name="cifar-10-python.tar.gz")
    pixels, labels, classes = read_prepared(out / "train.parquet")
    batch = pickle.loads(files["cifar-10-batches-py/data_batch_1"], encoding="bytes")
    first = batch[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(pixels[0], first)  # CHW rows become HWC images
    assert labels[:4].tolist() == batch[b"labels"]
    assert classes[0] == "airplane" and summary["train"]["images"] == 20


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    files = official_files()
    files["cifar-10-batches-py/test_batch"] = pickle.dumps(Exploit(), protocol=2)
    with pytest.raises(ArchiveError, match="test_batch: not a CIFAR batch .*forbidden global .*print"):
        prepared(tmp_path, files, name="cifar-10-python.tar.gz")


def test_archive_changed_after_download_is_refused(tmp_path):
    _, _ = prepared(tmp_path, image_folder_files(per_class=(1, 1)))
    archive = tmp_path / "raw" / "a.tar.gz"
    archive.write_bytes(archive.read_bytes() + b"tampered")
    with pytest.raises(download.ChecksumError, match="a.tar.gz: sha256 is"):
        prepare.read_archive(tmp_path / "raw", 32, workers=1)


def test_parallel_decoding_matches_serial(tmp_path):
    files = image_folder_files(per_class=(4, 2))
    raw_dir = tmp_path / "raw"
    archive = write_tar(tmp_path / "a.tar.gz", files)
    source = Source(str(archive), "")
    partial = download.fetch_archive(source, tmp_path / "p")
    download.publish(partial, source, download.check_archive(partial, source), raw_dir)
    serial = prepare.read_archive(raw_dir, 32, workers=1)
    parallel = prepare.read_archive(raw_dir, 32, workers=2)
    assert np.array_equal(serial.splits["train"].pixels, parallel.splits["train"].pixels)


def test_jpeg_input(tmp_path):
    files = {}
    for split in ("train", "test"):
        for cls in ("a", "b"):
            out = io.BytesIO()
            Image.new("RGB", (32, 32), (200, 10, 10)).save(out, format="JPEG")
            files[f"{split}/{cls}/0.jpg"] = out.getvalue()
    summary, out = prepared(tmp_path, files)
    pixels = read_prepared(out / "train.parquet")[0]
    assert summary["classes"] == 2 and abs(int(pixels[0, 0, 0, 0]) - 200) < 8
