"""One GPU per concurrently running trial on a multi-GPU machine without a scheduler.

Snakemake's ``--resources gpu=N`` bounds how many trials run at once; it does not say which
device each one gets. :func:`claim_gpu` gives each trial process its own: it takes an
exclusive lock file per GPU (``<lock_dir>/gpu<i>.lock``) and points ``CUDA_VISIBLE_DEVICES``
at the first free one. The kernel drops the lock when the process ends, also when it is
killed, so a crashed trial never leaves a GPU marked busy. The lock folder is one per machine
(:func:`machine_lock_dir`), so two studies run side by side, by one user or several, never
put two trials on one GPU.

Call it before anything initialises CUDA (torch reads ``CUDA_VISIBLE_DEVICES`` once). GPUs
are counted with ``nvidia-smi -L``, never through torch, so the caller's process stays free
of CUDA until it picks its device.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from filelock import FileLock, Timeout

VISIBLE = "CUDA_VISIBLE_DEVICES"
LOCK_DIR_ENV = "OCTOPI_GPU_LOCK_DIR"
# Like /tmp itself: anyone may add a lock file, only its owner may remove it.
_SHARED_DIR_MODE = 0o1777


def machine_lock_dir(environ: MutableMapping[str, str] | None = None) -> Path:
    """The GPU lock folder every octopi process on this machine shares: ``$OCTOPI_GPU_LOCK_DIR``
    when set, else ``<temp dir>/octopi-gpu-locks`` (per node on a cluster, as GPUs are)."""
    environ = os.environ if environ is None else environ
    if environ.get(LOCK_DIR_ENV):
        return Path(environ[LOCK_DIR_ENV]).expanduser()
    return Path(tempfile.gettempdir()) / "octopi-gpu-locks"


def list_gpus(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Device IDs this process may use: the ``CUDA_VISIBLE_DEVICES`` entries when set, else
    ``"0"`` … ``"N-1"`` for the N GPUs ``nvidia-smi -L`` lists (none without nvidia-smi)."""
    environ = os.environ if environ is None else environ
    if VISIBLE in environ:
        return [part.strip() for part in environ[VISIBLE].split(",") if part.strip()]
    return [str(index) for index in range(count_nvidia_gpus())]


def count_nvidia_gpus() -> int:
    """Number of GPUs ``nvidia-smi -L`` lists; 0 when it is missing or fails."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return 0
    try:
        listing = subprocess.run(
            [executable, "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


@contextlib.contextmanager
def claim_gpu(
    lock_dir: str | Path | None = None,
    gpu_ids: list[str] | None = None,
    environ: MutableMapping[str, str] | None = None,
    poll_seconds: float = 5.0,
    timeout_seconds: float | None = None,
) -> Iterator[str | None]:
    """Hold one free GPU for the ``with`` block; yield its ID (None: nothing was claimed).

    Does nothing (yields None) under Slurm when ``CUDA_VISIBLE_DEVICES`` is set (Slurm chose
    the device) and on machines without GPUs (trials run on the CPU). Otherwise it locks
    ``<lock_dir>/gpu<id>.lock`` (default :func:`machine_lock_dir`) for the first ID of
    ``gpu_ids`` (default :func:`list_gpus`) that no other process holds, sets
    ``CUDA_VISIBLE_DEVICES`` to it, and restores the variable and releases the lock on exit.
    When every GPU is held it waits, checking every ``poll_seconds``, and raises
    ``TimeoutError`` after ``timeout_seconds`` (None: no limit).
    """
    environ = os.environ if environ is None else environ
    if "SLURM_JOB_ID" in environ and VISIBLE in environ:
        yield None
        return
    candidates = list_gpus(environ) if gpu_ids is None else list(gpu_ids)
    if not candidates:
        yield None
        return

    lock_dir = machine_lock_dir(environ) if lock_dir is None else Path(lock_dir)
    _make_shared_dir(lock_dir)
    start = time.monotonic()
    told = False
    while True:
        claimed = _try_lock(lock_dir, candidates)
        if claimed is not None:
            break
        waited = time.monotonic() - start
        if timeout_seconds is not None and waited >= timeout_seconds:
            raise TimeoutError(
                f"all GPUs ({', '.join(candidates)}) stayed locked for {waited:.0f} s by other "
                f"trials (lock files in {lock_dir}); run fewer trials at once (--gpus)"
            )
        if not told:
            print(
                f"waiting for a free GPU: {', '.join(candidates)} are all held ({lock_dir})",
                file=sys.stderr,
                flush=True,
            )
            told = True
        time.sleep(poll_seconds)

    gpu_id, lock = claimed
    previous = environ.get(VISIBLE)
    environ[VISIBLE] = gpu_id
    try:
        yield gpu_id
    finally:
        if previous is None:
            environ.pop(VISIBLE, None)
        else:
            environ[VISIBLE] = previous
        lock.release()


def _make_shared_dir(folder: Path) -> None:
    """Create ``folder`` writable by every user (sticky); leave an existing one's mode alone."""
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        folder.mkdir()
        folder.chmod(_SHARED_DIR_MODE)  # mkdir's mode is cut by the umask


def _write_pid(fd: int) -> None:
    """Who holds the lock, for people looking at the folder (skipped on a read-only file)."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _try_lock(
    lock_dir: Path, candidates: list[str], prefix: str = "gpu"
) -> tuple[str, FileLock] | None:
    """(gpu_id, held lock) for the first GPU not locked by anyone, else None; the lock file
    is ``<prefix><id>.lock`` (:mod:`octopi.cpu_slots` locks CPU shares so).

    filelock's FileLock takes an flock (not lockf): two locks conflict even inside one
    process, and the lock goes with the process when it dies. The file is created readable
    and writable by every user (another user's trials lock it too); one another user made
    private cannot be locked (filelock needs write access) and is reported.
    """
    for gpu_id in candidates:
        safe = "".join(c if c.isalnum() or c in "-." else "_" for c in gpu_id)
        lock = FileLock(
            lock_dir / f"{prefix}{safe}.lock",
            mode=0o666,
            thread_local=False,
            fallback_to_soft=False,
            preserve_lock_file=True,
            on_acquired=_write_pid,
        )
        try:
            lock.acquire(blocking=False)
        except Timeout:
            continue
        except PermissionError as error:
            raise PermissionError(
                f"cannot lock {lock.lock_file}: another user made it private; make it "
                f"writable by all (chmod 666) or set {LOCK_DIR_ENV} to another folder"
            ) from error
        return gpu_id, lock
    return None
