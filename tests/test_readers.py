"""seal_fast.readers: every way a handed-in file can be wrong gets its own one-line
reason, told by what the file is, not by its name."""
import os
import zipfile

import numpy as np
import pytest
import torch

from seal_fast.errors import SealFastError
from seal_fast.readers import load_torch, open_npz, read_npy, regular_file, verify_zip


def test_not_regular_files_are_named_for_what_they_are(tmp_path):
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    with pytest.raises(SealFastError, match="is a FIFO, not a regular file"):
        read_npy(fifo)
    dev = tmp_path / "zero.npy"
    dev.symlink_to("/dev/zero")
    with pytest.raises(SealFastError, match="is a character device"):
        read_npy(dev)
    dangling = tmp_path / "gone.npy"
    dangling.symlink_to(tmp_path / "nowhere.npy")
    with pytest.raises(SealFastError, match="symbolic link to .*nowhere.npy, which does not exist"):
        read_npy(dangling)
    with pytest.raises(SealFastError, match="is a directory, not a file"):
        regular_file(tmp_path)
    with pytest.raises(SealFastError, match="does not exist"):
        regular_file(tmp_path / "missing.npy")


def test_content_decides_not_the_suffix(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros(3))
    (tmp_path / "zip.npy").write_bytes((tmp_path / "a.npz").read_bytes())
    with pytest.raises(SealFastError, match="not a .npy array .*zip archive"):
        read_npy(tmp_path / "zip.npy")
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    (tmp_path / "pt.npy").write_bytes((tmp_path / "t.pt").read_bytes())
    with pytest.raises(SealFastError, match="zip archive"):
        read_npy(tmp_path / "pt.npy")
    (tmp_path / "text.npy").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(SealFastError, match="not a .npy array \\(its first bytes say something else\\)"):
        read_npy(tmp_path / "text.npy")
    (tmp_path / "pt.npz").write_bytes((tmp_path / "t.pt").read_bytes())
    with pytest.raises(SealFastError, match="a torch .pt file under a .npz name"):
        with open_npz(tmp_path / "pt.npz"):
            pass
    np.save(tmp_path / "x.npy", np.zeros(3))
    (tmp_path / "npy.pt").write_bytes((tmp_path / "x.npy").read_bytes())
    with pytest.raises(SealFastError, match="a .npy array, not a readable tensor file"):
        load_torch(tmp_path / "npy.pt")
    (tmp_path / "npz.pt").write_bytes((tmp_path / "a.npz").read_bytes())
    with pytest.raises(SealFastError, match="an .npz archive, not a readable tensor file"):
        load_torch(tmp_path / "npz.pt")
    (tmp_path / "noise.pt").write_bytes(os.urandom(64).replace(b"\x80", b"\x81").replace(b"PK", b"pk"))
    with pytest.raises(SealFastError, match="not a readable tensor file \\(its first bytes"):
        load_torch(tmp_path / "noise.pt")


def test_big_endian_npy_is_read_in_native_order(tmp_path):
    a = np.arange(12, dtype=">f4").reshape(3, 4)
    np.save(tmp_path / "be.npy", a)
    got = read_npy(tmp_path / "be.npy")
    assert got.dtype.isnative and got.dtype == np.float32
    np.testing.assert_array_equal(got, a.astype(np.float32))


def test_header_claiming_more_than_the_file_holds(tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (10**15, 10**6)})
        f.write(b"\x00" * 64)
    with pytest.raises(SealFastError, match=r"claims shape \(1000000000000000, 1000000\).*damaged"):
        read_npy(path)
    small = tmp_path / "short.npy"
    np.save(small, np.zeros((100, 10), np.float32))
    small.write_bytes(small.read_bytes()[:-400])
    with pytest.raises(SealFastError, match=r"claims shape \(100, 10\) of float32, more than the file's"):
        read_npy(small)


def test_npz_members_must_be_arrays_and_not_bombs(tmp_path):
    path = tmp_path / "mixed.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"")
        z.writestr("notes.txt", "hello")
    with pytest.raises(SealFastError, match="member 'notes.txt' is not a .npy array"):
        with open_npz(path):
            pass
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x=np.zeros(80 << 20, np.uint8))  # 80 MiB of zeros in a few hundred KiB
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(SealFastError, match="would inflate .* likely zip bomb"):
        with open_npz(bomb):
            pass
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    with pytest.raises(SealFastError, match="an empty .npz archive"):
        with open_npz(empty):
            pass


def test_a_flipped_bit_in_a_torch_file_is_caught(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.arange(1000, dtype=torch.float32)}, path)
    verify_zip(path, str(path))  # intact
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data/0"))
    raw = bytearray(path.read_bytes())
    local = info.header_offset  # the member's data follows its local header (name and extra of its own length)
    start = local + 30 + int.from_bytes(raw[local + 26:local + 28], "little") + \
        int.from_bytes(raw[local + 28:local + 30], "little")
    raw[start + 2000] ^= 0x04  # one bit of one float
    path.write_bytes(bytes(raw))
    assert torch.load(path, weights_only=True)["w"][500] != 500.0  # torch itself would use it
    with pytest.raises(SealFastError, match="checksum mismatch"):
        load_torch(path)


def test_a_damaged_central_directory_is_one_line(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(10)}, path)
    raw = bytearray(path.read_bytes())
    at = raw.rfind(b"PK\x01\x02")  # the last central-directory record: its signature broken
    raw[at:at + 4] = b"XX\x01\x02"
    path.write_bytes(bytes(raw))
    assert zipfile.is_zipfile(path)  # the end record still says zip
    with pytest.raises(SealFastError, match="damaged file"):
        load_torch(path)
