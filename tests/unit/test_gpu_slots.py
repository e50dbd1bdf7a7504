"""One GPU per running trial: lock files, CUDA_VISIBLE_DEVICES, Slurm and CPU-only cases."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from octopi.gpu_slots import LOCK_DIR_ENV, VISIBLE, claim_gpu, list_gpus, machine_lock_dir


def test_each_claim_gets_its_own_gpu_and_releases_it(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    gpus = ["0", "1"]
    with claim_gpu(tmp_path, gpu_ids=gpus, environ=env) as first:
        assert first == "0" and env[VISIBLE] == "0"
        other: dict[str, str] = {}
        with claim_gpu(tmp_path, gpu_ids=gpus, environ=other) as second:
            assert second == "1" and other[VISIBLE] == "1"
        assert VISIBLE not in other  # restored
    assert VISIBLE not in env
    with claim_gpu(tmp_path, gpu_ids=gpus, environ=env) as again:
        assert again == "0"  # released on exit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu0.lock", "gpu1.lock"]


def test_waits_while_every_gpu_is_held(tmp_path: Path) -> None:
    held = claim_gpu(tmp_path, gpu_ids=["0"], environ={})
    waiting = claim_gpu(tmp_path, gpu_ids=["0"], environ={}, poll_seconds=0.05, timeout_seconds=0.2)
    with held, pytest.raises(TimeoutError, match="stayed locked"), waiting:
        pass


def test_lock_is_held_across_processes_and_dropped_when_one_dies(tmp_path: Path) -> None:
    # A child takes GPU 0 and is killed: the kernel drops its lock, GPU 0 is free again.
    code = textwrap.dedent(
        f"""
        import sys, time
        from octopi.gpu_slots import claim_gpu
        with claim_gpu({str(tmp_path)!r}, gpu_ids=["0", "1"], environ={{}}) as gpu:
            print(gpu, flush=True)
            time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "0"
        with claim_gpu(tmp_path, gpu_ids=["0", "1"], environ={}) as gpu:
            assert gpu == "1"
    finally:
        child.kill()
        child.wait()
    with claim_gpu(tmp_path, gpu_ids=["0", "1"], environ={}) as gpu:
        assert gpu == "0"


def test_slurm_assigned_devices_are_left_alone(tmp_path: Path) -> None:
    env = {"SLURM_JOB_ID": "42", VISIBLE: "3"}
    with claim_gpu(tmp_path / "locks", gpu_ids=["0", "1"], environ=env) as gpu:
        assert gpu is None and env[VISIBLE] == "3"
    assert not (tmp_path / "locks").exists()


def test_no_gpus_means_cpu_and_no_change(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    with claim_gpu(tmp_path, gpu_ids=[], environ=env) as gpu:
        assert gpu is None and env == {}
    # CUDA_VISIBLE_DEVICES="" hides every GPU (model-explore --gpus 0).
    assert list_gpus({VISIBLE: ""}) == []
    with claim_gpu(tmp_path, environ={VISIBLE: ""}) as gpu:
        assert gpu is None


def test_visible_devices_outside_slurm_are_the_candidates(tmp_path: Path) -> None:
    env = {VISIBLE: "2,5"}
    assert list_gpus(env) == ["2", "5"]
    with claim_gpu(tmp_path, environ=env) as gpu:
        assert gpu == "2" and env[VISIBLE] == "2"
    assert env[VISIBLE] == "2,5"


def test_one_lock_folder_per_machine_shared_by_every_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert machine_lock_dir({LOCK_DIR_ENV: str(tmp_path / "x")}) == tmp_path / "x"
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert machine_lock_dir({}) == tmp_path / "octopi-gpu-locks"
    env = {LOCK_DIR_ENV: str(tmp_path / "shared" / "locks")}
    with claim_gpu(gpu_ids=["0", "1"], environ=env) as first:  # the default folder: env's
        assert first == "0"
        with claim_gpu(gpu_ids=["0", "1"], environ=dict(env)) as second:
            assert second == "1"
    folder = tmp_path / "shared" / "locks"
    assert folder.stat().st_mode & 0o7777 == 0o1777  # sticky and writable by all, like /tmp
    assert (folder / "gpu0.lock").stat().st_mode & 0o777 == 0o666


def test_lock_file_names_its_holder(tmp_path: Path) -> None:
    import os

    with claim_gpu(tmp_path, gpu_ids=["0"], environ={}):
        assert (tmp_path / "gpu0.lock").read_text() == f"{os.getpid()}\n"


def test_a_lock_file_that_cannot_be_opened_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another user's private lock file (as root here, simulated): a clear error, not a hang.
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("filelock.FileLock.acquire", refuse)
    with (
        pytest.raises(PermissionError, match="chmod 666"),
        claim_gpu(tmp_path, gpu_ids=["0"], environ={}),
    ):
        pass
