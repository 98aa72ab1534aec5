"""The resume journal of an embedding job: finished chunks of images kept in
`FEATDIR/.partial/` (each written atomically), and the job description that says
whether they belong to the command being run again."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from ..files import atomic_path

PARTIAL = ".partial"


def file_identity(path) -> dict:
    """A checkpoint as the resume journal knows it: a new file under the same path is another job."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}


def chunk_name(start: int, end: int) -> str:
    return f"chunk_{start:010d}_{end:010d}.npz"


def finished_chunks(partial: Path) -> list[tuple[int, int, Path]]:
    """(start, end, path) of the finished chunks, by start."""
    found = []
    for p in partial.glob("chunk_*_*.npz"):
        _, start, end = p.stem.split("_")
        found.append((int(start), int(end), p))
    return sorted(found)


def resume_position(partial: Path, lo: int, hi: int) -> int:
    """The first index of [lo, hi) not covered by finished chunks that tile [lo, it)."""
    pos = lo
    for start, end, _ in finished_chunks(partial):
        if start == pos and end <= hi:
            pos = end
    return pos


def prepare_partial(partial: Path, job: dict, progress: bool) -> None:
    job_file = partial / "job.json"
    if partial.exists():
        try:
            same = json.loads(job_file.read_text()) == json.loads(json.dumps(job))
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:  # another job, or the same source changed since: its chunks are not ours
            if progress and finished_chunks(partial):
                print(f"{partial.parent}: the interrupted job there had other settings or the source has changed "
                      "since; starting over", file=sys.stderr)
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    if not job_file.exists():
        job_file.write_text(json.dumps(job, indent=1))


def write_chunk(partial: Path, start: int, end: int, arrays: dict) -> None:
    """Images start..end, done: their arrays as one chunk, written atomically."""
    with atomic_path(partial / chunk_name(start, end), ".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
