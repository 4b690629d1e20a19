"""Download and unpack LFW deep-funneled into a data root.

:func:`fetch_lfw` downloads the archive with :mod:`urllib` (so ``file://``
URLs work too), streaming it to a temporary file beside its destination,
checks its checksum (SHA-256 if given, else the MD5 published on the LFW
site), renames it into place, and unpacks it safely: members with absolute
paths, ``..`` components, links or device files are rejected, and the tree is
unpacked into a temporary folder first and renamed into place, so an
interrupted fetch never leaves a half-extracted dataset. The result is the
layout :func:`~facecraft.data.root.resolve_dataset_root` looks for
(``<data_root>/lfw-deepfunneled/<Name>/<Name>_NNNN.jpg``).

References:
    G. B. Huang, M. Ramesh, T. Berg, E. Learned-Miller, "Labeled Faces in the
    Wild: A Database for Studying Face Recognition in Unconstrained
    Environments", UMass Amherst TR 07-49, 2007, http://vis-www.cs.umass.edu/lfw/.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import List, Optional, Union

from facecraft.data.errors import DataError
from facecraft.data.types import ProgressFn

__all__ = ["LFW_DEEPFUNNELED_URL", "LFW_DEEPFUNNELED_MD5", "fetch_lfw", "safe_extract"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: The official LFW deep-funneled archive (about 110 MB).
LFW_DEEPFUNNELED_URL = "http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz"
#: Its MD5 as published on the LFW site (no SHA-256 is published).
LFW_DEEPFUNNELED_MD5 = "68331da3eb755a505a502b5aacb3c201"
#: The folder the archive unpacks to.
LFW_FOLDER = "lfw-deepfunneled"

_CHUNK = 1 << 20


def fetch_lfw(
    data_root: PathLike,
    *,
    url: str = LFW_DEEPFUNNELED_URL,
    sha256: Optional[str] = None,
    md5: Optional[str] = LFW_DEEPFUNNELED_MD5,
    force: bool = False,
    keep_archive: bool = False,
    timeout: float = 60.0,
    progress: Optional[ProgressFn] = None,
) -> Path:
    """Download LFW deep-funneled into ``data_root`` and unpack it.

    Args:
        data_root: folder to unpack into (created if needed).
        url: where to download from (``http(s)://`` or ``file://``).
        sha256: expected SHA-256 of the archive; checked when given.
        md5: expected MD5 (default: the published one); checked when
            ``sha256`` is not given. With neither, nothing is checked (logged).
        force: download and unpack again even if ``<data_root>/lfw-deepfunneled``
            exists (replacing it); without it an existing, non-empty folder is
            returned at once.
        keep_archive: keep the downloaded archive beside the unpacked folder.
        timeout: network timeout in seconds.
        progress: called as ``progress(done, total, description)`` for the
            download (bytes; ``total`` is 0 when the server does not say) and
            the extraction (members).

    Returns:
        The unpacked dataset folder (``<data_root>/lfw-deepfunneled`` for the
        official archive; ``data_root`` itself if the archive has several
        top-level entries).

    Raises:
        DataError: the download fails, the checksum does not match (the
            download is deleted), or the archive is unreadable or unsafe.
    """
    data_root = Path(data_root).expanduser()
    data_root.mkdir(parents=True, exist_ok=True)
    archive_name = PurePosixPath(urllib.parse.urlparse(url).path).name or "lfw-deepfunneled.tgz"
    target = data_root / LFW_FOLDER
    if target.is_dir() and any(target.iterdir()) and not force:
        logger.info("%s already exists; not downloading (pass force=True to replace it)", target)
        return target
    archive = data_root / archive_name
    _download(url, archive, sha256=sha256, md5=md5, timeout=timeout, progress=progress)
    try:
        top = safe_extract(archive, data_root, replace=force, progress=progress)
    finally:
        if not keep_archive and archive.exists():
            archive.unlink()
    result = data_root / top[0] if len(top) == 1 and (data_root / top[0]).is_dir() else data_root
    logger.info("LFW unpacked to %s", result)
    return result


def _download(
    url: str,
    dest: Path,
    *,
    sha256: Optional[str],
    md5: Optional[str],
    timeout: float,
    progress: Optional[ProgressFn],
) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    h_sha, h_md5 = hashlib.sha256(), hashlib.md5()
    desc = f"download {dest.name}"
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (user-chosen URL)
                    total = int(resp.headers.get("Content-Length") or 0)
                    done = 0
                    if progress is not None:
                        progress(0, total, desc)
                    while True:
                        block = resp.read(_CHUNK)
                        if not block:
                            break
                        out.write(block)
                        h_sha.update(block)
                        h_md5.update(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, total, desc)
            except (urllib.error.URLError, OSError, ValueError) as e:
                raise DataError(
                    f"{url}: download failed ({e});"
                    f" download it by hand and unpack it into {dest.parent}"
                ) from e
        if sha256 is not None:
            got, want, kind = h_sha.hexdigest(), sha256.lower(), "SHA-256"
        elif md5 is not None:
            got, want, kind = h_md5.hexdigest(), md5.lower(), "MD5"
        else:
            got = want = kind = ""
            logger.warning("%s: no checksum given; the download is not verified", url)
        if got != want:
            raise DataError(
                f"{url}: {kind} mismatch (expected {want}, got {got}); the download was deleted"
            )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def safe_extract(
    archive: PathLike,
    dest: PathLike,
    *,
    replace: bool = False,
    progress: Optional[ProgressFn] = None,
) -> List[str]:
    """Unpack a tar archive into ``dest`` without letting it write outside ``dest``.

    Every member is checked first; regular files and folders are unpacked into
    a temporary folder inside ``dest``, and each top-level entry is then
    renamed into ``dest``.

    Args:
        archive: a ``.tar``, ``.tar.gz`` or ``.tgz`` file.
        dest: the folder to unpack into.
        replace: replace existing top-level entries of the same name (else
            their presence is an error).
        progress: called as ``progress(done, total, "extract")`` per member.

    Returns:
        The names of the top-level entries unpacked.

    Raises:
        DataError: the archive is unreadable, a member is absolute, has a
            ``..`` component, or is a link or special file, or a top-level
            entry already exists and ``replace`` is False.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed by the `with tar:` below)
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{archive}: not a readable tar archive ({e})") from e
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{archive}: corrupt tar archive ({e})") from e
        tops: List[str] = []
        for m in members:
            p = PurePosixPath(m.name)
            if m.name.startswith(("/", "\\")) or p.is_absolute() or (p.parts and ":" in p.parts[0]):
                raise DataError(f"{archive}: unsafe member {m.name!r} (absolute path)")
            if ".." in p.parts:
                raise DataError(f"{archive}: unsafe member {m.name!r} (contains '..')")
            if not (m.isfile() or m.isdir()):
                raise DataError(
                    f"{archive}: unsafe member {m.name!r} (links and special files are not allowed)"
                )
            parts = [x for x in p.parts if x not in ("", ".")]
            if parts and parts[0] not in tops:
                tops.append(parts[0])
        for t in tops:
            if (dest / t).exists() and not replace:
                raise DataError(f"{dest / t}: already exists; remove it or fetch with force=True")
        tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
        try:
            for i, m in enumerate(members, 1):
                try:
                    tar.extract(m, tmp, filter="data")
                except (tarfile.TarError, OSError, EOFError) as e:
                    raise DataError(f"{archive}: cannot extract {m.name!r} ({e})") from e
                if progress is not None:
                    progress(i, len(members), "extract")
            for t in tops:
                if (dest / t).exists():
                    if (dest / t).is_dir():
                        shutil.rmtree(dest / t)
                    else:
                        (dest / t).unlink()
                os.replace(tmp / t, dest / t)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return tops
