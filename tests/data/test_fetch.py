"""fetch_lfw over file:// URLs: download, checksum, safe and atomic extraction."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Dict

import pytest

from facecraft.data import DataError, fetch_lfw, resolve_dataset_root, safe_extract, scan_lfw

from .conftest import make_folder_tree


def _make_tgz(path: Path, tree: Path) -> str:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _raw_tgz(path: Path, members: Dict[str, bytes], symlink: str = "") -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)


@pytest.fixture()
def lfw_tgz(tmp_path: Path) -> tuple:
    src = tmp_path / "src" / "lfw-deepfunneled"
    make_folder_tree(src, {"Ann_A": 2, "Bob_B": 1})
    tgz = tmp_path / "server" / "lfw-deepfunneled.tgz"
    tgz.parent.mkdir()
    return tgz, _make_tgz(tgz, src)


def test_fetch_via_file_url(lfw_tgz, tmp_path: Path, progress_log) -> None:
    tgz, sha = lfw_tgz
    log, cb = progress_log
    root = tmp_path / "data"
    out = fetch_lfw(root, url=tgz.as_uri(), sha256=sha, progress=cb)
    assert out == root / "lfw-deepfunneled"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == [
        "Ann_A/Ann_A_0001.jpg",
        "Ann_A/Ann_A_0002.jpg",
        "Bob_B/Bob_B_0001.jpg",
    ]
    assert sorted(p.name for p in root.iterdir()) == [
        "lfw-deepfunneled"
    ]  # no archive, temp or partial files
    assert resolve_dataset_root("lfw", str(root)) == out and len(scan_lfw(out)) == 3
    size = tgz.stat().st_size
    assert (size, size) in [(d, t) for d, t, desc in log if desc.startswith("download")]
    assert log[-1][2] == "extract" and log[-1][0] == log[-1][1]


def test_fetch_checks_md5_and_keeps_archive(lfw_tgz, tmp_path: Path) -> None:
    tgz, _ = lfw_tgz
    md5 = hashlib.md5(tgz.read_bytes()).hexdigest()
    out = fetch_lfw(tmp_path / "data", url=tgz.as_uri(), md5=md5, keep_archive=True)
    assert (tmp_path / "data" / "lfw-deepfunneled.tgz").read_bytes() == tgz.read_bytes()
    assert (out / "Bob_B" / "Bob_B_0001.jpg").is_file()


@pytest.mark.parametrize("kind", ["sha256", "md5"])
def test_checksum_mismatch_deletes_download(lfw_tgz, tmp_path: Path, kind: str) -> None:
    tgz, _ = lfw_tgz
    root = tmp_path / "data"
    kwargs = {"sha256": "0" * 64} if kind == "sha256" else {"md5": "0" * 32}
    with pytest.raises(DataError, match=r"lfw-deepfunneled\.tgz: (SHA-256|MD5) mismatch.*deleted"):
        fetch_lfw(root, url=tgz.as_uri(), **kwargs)
    assert list(root.iterdir()) == []


def test_default_md5_rejects_a_different_archive(lfw_tgz, tmp_path: Path) -> None:
    tgz, _ = lfw_tgz
    with pytest.raises(DataError, match="MD5 mismatch"):
        fetch_lfw(tmp_path / "data", url=tgz.as_uri())


def test_existing_folder_is_not_downloaded_again(lfw_tgz, tmp_path: Path) -> None:
    tgz, sha = lfw_tgz
    root = tmp_path / "data"
    make_folder_tree(root / "lfw-deepfunneled", {"Cy_C": 1})
    missing = (tmp_path / "nowhere.tgz").as_uri()
    assert fetch_lfw(root, url=missing, sha256=sha) == root / "lfw-deepfunneled"
    with pytest.raises(DataError, match="download failed"):
        fetch_lfw(root, url=missing, sha256=sha, force=True)
    out = fetch_lfw(root, url=tgz.as_uri(), sha256=sha, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["Ann_A", "Bob_B"]


@pytest.mark.parametrize(
    "name,why",
    [
        ("../evil.txt", r"contains '\.\.'"),
        ("/tmp/evil.txt", "absolute path"),
        ("lfw-deepfunneled/../../evil.txt", r"contains '\.\.'"),
    ],
)
def test_unsafe_members_rejected(tmp_path: Path, name: str, why: str) -> None:
    bad = tmp_path / "bad.tgz"
    _raw_tgz(bad, {"lfw-deepfunneled/A/A_0001.jpg": b"x", name: b"evil"})
    dest = tmp_path / "dest" / "inner"
    with pytest.raises(DataError, match=f"unsafe member .*{why}"):
        safe_extract(bad, dest)
    assert not (tmp_path / "dest" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert list(dest.iterdir()) == []


def test_links_rejected_and_fetch_cleans_up(tmp_path: Path) -> None:
    bad = tmp_path / "lfw-deepfunneled.tgz"
    _raw_tgz(bad, {"lfw-deepfunneled/A/A_0001.jpg": b"x"}, symlink="lfw-deepfunneled/A/link")
    sha = hashlib.sha256(bad.read_bytes()).hexdigest()
    root = tmp_path / "data"
    with pytest.raises(DataError, match="links and special files"):
        fetch_lfw(root, url=bad.as_uri(), sha256=sha)
    assert list(root.iterdir()) == []


def test_not_a_tar_archive(tmp_path: Path) -> None:
    junk = tmp_path / "lfw-deepfunneled.tgz"
    junk.write_bytes(b"not a tarball")
    sha = hashlib.sha256(junk.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="not a readable tar archive"):
        fetch_lfw(tmp_path / "data", url=junk.as_uri(), sha256=sha)
