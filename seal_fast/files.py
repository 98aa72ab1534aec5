"""Writing files so that a crash or a bad argument never leaves a half-written or
clobbered file: atomic single files, several outputs committed together, and
the checks of output paths made before any work starts."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import SealFastError


def _temp_next_to(path: Path, suffix: str) -> str:
    """An empty temporary file in `path`'s folder (created if need be), so the final rename stays on one disk."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    except (FileExistsError, NotADirectoryError):
        raise SealFastError(f"cannot write {path}: a parent of it is a file, not a folder") from None
    except OSError as exc:  # no permission, a read-only or full disk
        raise SealFastError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    return tmp


def write_failure(exc: BaseException, path) -> SealFastError | None:
    """The one-line error for a write that failed (a full disk, a quota, a read-only
    or failing disk), or None when `exc` is no such failure. torch.save reports a
    failed write as a RuntimeError of its zip writer."""
    # numpy's tofile reports a short write without an errno ("4800 requested and 218 written")
    short_write = isinstance(exc, OSError) and exc.errno is None and "written" in str(exc)
    if isinstance(exc, OSError) and (exc.errno in WRITE_ERRNOS or short_write):
        return SealFastError(f"cannot write {path}: {exc.strerror or exc}; nothing was written")
    text = str(exc)
    if isinstance(exc, RuntimeError) and any(s in text for s in TORCH_WRITE_ERRORS):
        return SealFastError(f"cannot write {path}: the write failed (is the disk full?); nothing was written")
    return None


# a full disk, a quota, a file size limit, a read-only or failing disk
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)
# what torch.save's zip writer says when the file cannot be written to the end
TORCH_WRITE_ERRORS = ("PytorchStreamWriter failed", "iostream error", "unexpected pos", "file write failed")


@contextlib.contextmanager
def held_folder(folder: Path, busy_message: str) -> Iterator[None]:
    """Hold `folder` (made if need be) for one job: while it is held, another process
    that asks for it gets SealFastError(busy_message) at once instead of two jobs
    writing the same files. The lock is the kernel's (flock on the folder itself), so
    it ends with the process: a crash or a kill leaves nothing to clean up."""
    try:
        import fcntl
    except ImportError:  # Windows has no flock: jobs there are not guarded
        yield
        return
    folder = Path(folder)
    made = [p for p in [folder, *folder.parents] if not p.exists()]  # removed again if left empty
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    ours = False  # another job's folder is never removed, even if it is still empty
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SealFastError(busy_message) from None
        except OSError:  # flock on folders is refused on some network mounts (NFS)
            print(f"note: {folder} cannot be locked on this filesystem; make sure no other job writes there",
                  file=sys.stderr)
        if not _same_file(fd, folder):  # removed and made again by another job since we opened it
            raise SealFastError(busy_message)
        ours = True
        yield
    finally:
        if ours:  # a job that failed before writing anything leaves no empty folder behind
            for path in made:
                with contextlib.suppress(OSError):
                    path.rmdir()
        with contextlib.suppress(OSError):  # before close: a forked child's copy of fd must not keep it
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to `path`; rename it onto `path` on success."""
    path = Path(path)
    tmp = _temp_next_to(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        failure = write_failure(exc, path)
        if failure is not None:
            raise failure from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_npy(path, array: np.ndarray) -> None:
    """np.save without pickles, flushed to disk (the caller makes it atomic)."""
    with open(path, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def write_json(path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def save_npy_atomic(path, array: np.ndarray) -> None:
    with atomic_path(path, ".npy") as tmp:
        write_npy(tmp, array)


def save_json_atomic(path, obj) -> None:
    with atomic_path(path, ".json") as tmp:
        write_json(tmp, obj)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


@contextlib.contextmanager
def npy_writer(path, shape, dtype) -> Iterator[np.memmap]:
    """A memory-mapped `.npy` being filled in place; appears at `path` only when complete."""
    with atomic_path(path, ".npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
        yield arr
        arr.flush()
        del arr


@contextlib.contextmanager
def staged_outputs() -> Iterator:
    """Write several outputs all or nothing: `stage(path, suffix)` gives a temporary
    path next to `path`; when the block ends without error every temporary file is
    renamed onto its target, otherwise all of them are removed."""
    staged: list[tuple[str, Path]] = []

    def stage(path, suffix: str = "") -> str:
        tmp = _temp_next_to(Path(path), suffix)
        staged.append((tmp, Path(path)))
        return tmp

    try:
        yield stage
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException as exc:
        failure = write_failure(exc, ", ".join(str(p) for _, p in staged))
        if failure is not None:
            raise failure from None
        raise
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def check_outputs(outputs: dict[str, Path], inputs: list[Path]) -> None:
    """Refuse, before any work, output paths that would clobber something: two
    outputs on one path, an output on an input file or inside an input directory
    (a feature store), an existing directory, or a folder that cannot be written."""
    seen: dict[Path, str] = {}
    resolved_inputs = [Path(p).resolve() for p in inputs]
    for what, path in outputs.items():
        path = Path(path)
        target = path.resolve()
        if target in seen:
            raise SealFastError(f"{what} {path} is the same file as {seen[target]}; give them different paths")
        seen[target] = f"{what} {path}"
        for source in resolved_inputs:
            if target == source or source in target.parents:
                raise SealFastError(f"{what} {path} would overwrite the input {source}; write it elsewhere")
        if target.is_dir():
            raise SealFastError(f"{what} {path} is a directory; give a file name")
        parent = next(p for p in [target.parent, *target.parent.parents] if p.exists())
        if not parent.is_dir():
            raise SealFastError(f"{what} {path}: {parent} is a file, not a directory")
        try:  # the one reliable test of writability (os.access is wrong for root and on some mounts)
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as exc:
            raise SealFastError(f"{what} {path}: cannot write in {parent} ({exc.strerror})") from None


def labels_output(path) -> tuple[Path, Path]:
    """The labels file (.npy) of `cluster`/`predict` and the run report beside it (.json)."""
    out = Path(path)
    if out.suffix != ".npy":
        raise SealFastError(f"--out {out}: the labels are written as a .npy file (the run report goes beside "
                            "it with .json); give a path ending in .npy")
    return out, out.with_suffix(".json")


def k_plot_output(labels_path) -> Path:
    """Where a run that chose K draws its scores: beside the labels, `<name>-k.png`."""
    out = Path(labels_path)
    return out.with_name(out.stem + "-k.png")
