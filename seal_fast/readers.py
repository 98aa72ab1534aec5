"""Reading the files a user hands in (`.npy`, `.npz`, `.pt`), never trusting them.

One reader per format, each with a one-line reason for every way a file can be
wrong: not a regular file (a directory, a FIFO, a device, a dangling link), empty,
another format under this one's name (told by the first bytes, not the suffix),
damaged (zip CRCs, a header claiming more bytes than the file has), or holding
Python objects (never unpickled: `allow_pickle=False`, `weights_only=True`).
"""
from __future__ import annotations

import contextlib
import os
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .errors import SealFastError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
PICKLE_MAGIC = b"\x80"  # torch's legacy (pre-zip) format starts with a pickle protocol byte
# a compressed member that inflates more than this, past a size worth checking, is refused:
# embeddings and images compress 1-10x, a zip bomb 1000x
MAX_INFLATE_RATIO = 200
INFLATE_CHECK_BYTES = 64 << 20


def regular_file(path, what: str | None = None) -> Path:
    """`path` if it names a readable regular file (links followed); else a one-line reason."""
    path = Path(path)
    label = what or str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise SealFastError(f"{label} is a symbolic link to {os.readlink(path)}, which does not exist") from None
        raise SealFastError(f"{label} does not exist") from None
    except OSError as exc:
        raise SealFastError(f"{label} cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise SealFastError(f"{label} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a character device" if stat.S_ISCHR(st.st_mode)
                else "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "not a regular file")
        raise SealFastError(f"{label} is {kind}, not a regular file")
    if not os.access(path, os.R_OK):
        raise SealFastError(f"{label} cannot be read (permission denied)")
    return path


def _open_head(path, what: str | None, kind: str) -> tuple[Path, str, bytes]:
    """(the checked path, its name for messages, its first bytes) of a non-empty regular file."""
    path = regular_file(path, what)
    label = what or str(path)
    if path.stat().st_size == 0:
        raise SealFastError(f"{label}: empty file, not {kind}")
    with open(path, "rb") as f:
        return path, label, f.read(8)


def _kind_of(head: bytes) -> str:
    if head.startswith(NPY_MAGIC):
        return "a .npy array"
    if head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
        return "a zip archive (an .npz, or a torch .pt file)"
    return "something else"


def read_npy(path, what: str | None = None) -> np.ndarray:
    """A memory-mapped `.npy` array. Big-endian data is accepted (converted to the
    machine's byte order, which copies it into memory)."""
    path, label, head = _open_head(path, what, "a .npy array")
    if not head.startswith(NPY_MAGIC):
        raise SealFastError(f"{label}: not a .npy array (its first bytes say {_kind_of(head)})")
    try:
        with warnings.catch_warnings():  # numpy warns on the overflow of a header's absurd shape, then raises
            warnings.simplefilter("ignore", RuntimeWarning)
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except OverflowError:
        raise SealFastError(f"{label}: its header claims {_claimed(path)}, more than any file holds; the file is "
                            "damaged") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Python objects" in str(exc) or "object arrays" in str(exc):
            raise SealFastError(f"{label}: holds Python objects (pickled data), which are never loaded; save a "
                                "plain numeric array") from None
        if "mmap length is greater than file size" in str(exc):
            raise SealFastError(f"{label}: its header claims {_claimed(path)}, more than the file's "
                                f"{path.stat().st_size:,} bytes; the file is truncated or damaged") from None
        raise SealFastError(f"{label}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
    except (OSError, EOFError) as exc:
        raise SealFastError(f"{label}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _claimed(path: Path) -> str:
    """The shape and dtype a .npy header declares (for the message of a truncated file)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        return f"shape {shape} of {dtype}"
    except Exception:  # the header itself is damaged
        return "an array"


@contextlib.contextmanager
def open_npz(path, what: str | None = None):
    """The arrays of a `.npz` archive as a read-only mapping (each member read when
    asked for), refused whole if a member is not a `.npy` array or would inflate like
    a zip bomb."""
    path, label, head = _open_head(path, what, "a .npz archive")
    if head.startswith(EMPTY_ZIP_MAGIC):
        raise SealFastError(f"{label}: an empty .npz archive: it holds no arrays")
    if not head.startswith(ZIP_MAGIC):
        raise SealFastError(f"{label}: not a readable .npz archive (a zip of .npy arrays); its first bytes say "
                            f"{_kind_of(head)}")
    try:
        data = np.load(path, allow_pickle=False)
        members = data.zip.infolist()
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SealFastError(f"{label}: not a readable .npz archive (a zip of .npy arrays): "
                            f"{str(exc).splitlines()[0]}") from None
    with data:
        if any(m.filename.endswith("data.pkl") for m in members):
            raise SealFastError(f"{label}: a torch .pt file under a .npz name (it holds data.pkl); rename it .pt")
        for m in members:
            if not m.filename.endswith(".npy"):
                raise SealFastError(f"{label}: member {m.filename!r} is not a .npy array; a .npz holds arrays only")
            if m.file_size > INFLATE_CHECK_BYTES and m.file_size > MAX_INFLATE_RATIO * max(m.compress_size, 1):
                raise SealFastError(f"{label}: member {m.filename!r} would inflate from {m.compress_size:,} to "
                                    f"{m.file_size:,} bytes; refused as a likely zip bomb")
        yield NpzMembers(data, label)


class NpzMembers:
    def __init__(self, data, label: str):
        self.data, self.label = data, label

    def __iter__(self):
        return iter(self.data.files)

    def __contains__(self, key):
        return key in self.data.files

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            arr = self.data[key]
        except Exception as exc:  # zip, zlib and numpy errors of a damaged member; object arrays
            if "allow_pickle" in str(exc):
                raise SealFastError(f"{self.label}: array {key!r} holds Python objects (pickled data), which are "
                                    "never loaded; save plain numeric arrays") from None
            raise SealFastError(f"{self.label}: array {key!r} is damaged ({str(exc).splitlines()[0]})") from None
        return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def verify_zip(path: Path, label: str) -> None:
    """Every member's CRC matches (torch.load does not check them: a flipped bit in a
    tensor would be used silently)."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise SealFastError(f"{label}: damaged file ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # zlib errors of a damaged member
        raise SealFastError(f"{label}: damaged file ({type(exc).__name__})") from None
    if bad is not None:
        raise SealFastError(f"{label}: damaged file (checksum mismatch in {bad})")


def load_torch(path, what: str | None = None, kind: str = "readable tensor file"):
    """The object of a torch `.pt` file, read with `weights_only=True` (tensors and plain
    values only, nothing executed) after checking that it is one and is intact; `kind`
    names what the file should be in messages."""
    path, label, head = _open_head(path, what, f"a {kind}")
    if head.startswith(NPY_MAGIC):
        raise SealFastError(f"{label}: a .npy array, not a {kind}")
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise SealFastError(f"{label}: damaged file ({str(exc).splitlines()[0]})") from None
        if names and all(n.endswith(".npy") for n in names):
            raise SealFastError(f"{label}: an .npz archive, not a {kind}")
        verify_zip(path, label)
    elif not head.startswith(PICKLE_MAGIC):
        raise SealFastError(f"{label}: not a {kind} (its first bytes say {_kind_of(head)})")
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors of a damaged file, or a pickle with code in it
        text = str(exc).strip()
        reason = ("it holds Python objects other than tensors, which are never unpickled"
                  if "weights only" in text.lower() or "weights_only" in text else
                  (text.splitlines()[0][:200] if text else type(exc).__name__))
        raise SealFastError(f"{label}: not a {kind} ({reason})") from None
