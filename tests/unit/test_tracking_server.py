"""The study's MLflow server with real ``mlflow server`` processes on 127.0.0.1: concurrent
trial-like processes logging through it, a server killed mid-study (trials go on; the
backfill completes MLflow) and the watchdog. model-explore's start / stop / --resume of it:
tests/cli/test_explore_tracking.py.

Each server start takes 5-15 s here, so these tests are slow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from tracking_worker import EXPERIMENT, epoch_row, finished_trial

from octopi import tracking, tracking_server
from octopi.search.tracking_sync import sync_study
from octopi.tracking_server import TrackingServer, answers, read_record

WORKER = Path(__file__).with_name("tracking_worker.py")

pytestmark = pytest.mark.slow
LOCAL = {"host": "127.0.0.1", "bind": "127.0.0.1"}


def start_workers(uri: str, study: Path, slots, epochs: int, seconds: float, *extra: str):
    return {
        slot: subprocess.Popen(
            [sys.executable, str(WORKER), uri, str(study), str(slot), str(epochs), str(seconds)]
            + list(extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for slot in slots
    }


def finish(workers: dict) -> dict[int, str]:
    outputs = {slot: job.communicate(timeout=300)[0] for slot, job in workers.items()}
    for slot, job in workers.items():
        assert job.returncode == 0, f"slot {slot} failed:\n{outputs[slot][-3000:]}"
        assert f"slot {slot} done" in outputs[slot]
    return outputs


def in_group(process: psutil.Process, group: int) -> bool:
    try:
        return os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE
    except (OSError, psutil.Error):
        return False


def group_gone(group: int) -> bool:
    return not any(in_group(p, group) for p in psutil.process_iter())


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def trial_runs(uri: str) -> tuple[object, list, list]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("octopi.role") == "study"]
    return client, parents, [r for r in runs if "octopi.slot" in r.data.tags]


def assert_complete(client, run, slot: int, epochs: int) -> None:
    """Every metric point of the slot's epochs.csv is in the run, exactly once."""
    rows = [epoch_row(slot, epoch) for epoch in range(1, epochs + 1)]
    for key in ("train_loss", "lr", "val_avg_f1"):
        history = client.get_metric_history(run.info.run_id, key)
        wanted = [(r["epoch"], r[key]) for r in rows if key in r]
        got = sorted((m.step, m.value) for m in history)
        assert [s for s, _ in got] == [s for s, _ in wanted], (slot, key)
        assert [v for _, v in got] == pytest.approx([v for _, v in wanted], rel=1e-6)


def test_eight_trials_log_through_one_server_which_the_watchdog_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracking_server, "WATCH_INTERVAL_S", 0.2)
    server = TrackingServer(tmp_path, **LOCAL)
    uri = server.start()
    try:
        record = read_record(tmp_path)
        assert record["uri"] == uri and record["pid"] == server.process.pid
        assert record["backend_store_uri"] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
        epochs = 12
        outputs = finish(start_workers(uri, tmp_path, range(8), epochs, 0.05))
        for output in outputs.values():
            assert "failures 0" in output  # every call went through, none skipped

        client, parents, runs = trial_runs(uri)
        assert len(parents) == 1
        assert sorted(int(r.data.tags["octopi.slot"]) for r in runs) == list(range(8))
        for run in runs:
            assert run.info.status == "FINISHED"
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            assert_complete(client, run, int(run.data.tags["octopi.slot"]), epochs)
        # One writer: the server (one uvicorn worker, no job runner) alone opened the store.
        assert not (tmp_path / "mlflow.db.lock").exists()
        members = [p for p in psutil.process_iter() if in_group(p, server.process.pid)]
        assert len(members) == 2, [p.cmdline() for p in members]  # mlflow server + uvicorn

        first_pid = server.process.pid
        os.killpg(first_pid, signal.SIGKILL)
        wait_for(lambda: server.process.pid != first_pid and answers(uri), 120, "a restart")
        assert read_record(tmp_path)["uri"] == uri  # same port: running jobs keep their URI
    finally:
        server.stop()
    assert group_gone(server.process.pid) and not answers(uri)
    assert read_record(tmp_path)["stopped"]


def test_a_server_killed_mid_study_loses_nothing(tmp_path: Path) -> None:
    server = TrackingServer(tmp_path, **LOCAL)
    uri = server.start(watch=False)
    epochs = 16
    try:
        workers = start_workers(uri, tmp_path, range(8), epochs, 0.05, "--sync", "--hold", "4")
        csvs = [tmp_path / "trials" / str(slot) / "epochs.csv" for slot in range(8)]
        wait_for(
            lambda: all(p.is_file() and len(p.read_text().splitlines()) == 5 for p in csvs),
            240,
            "every trial to log 4 epochs",
        )
        time.sleep(1.0)  # their epoch-4 metrics reach the server
        os.killpg(server.process.pid, signal.SIGKILL)  # mid-study
        (tmp_path / "go").touch()
        started = time.monotonic()
        late = start_workers(uri, tmp_path, [8], epochs, 0.05, "--sync")  # starts while down
        outputs = finish({**workers, **late})
        # MLflow's own retries would hold each call for minutes (7 retries, doubling waits)
        assert time.monotonic() - started < 240
        assert all("failures 0" not in outputs[slot] for slot in range(8)), outputs
        assert "slot 8 done: run None" in outputs[8]
    finally:
        server.stop()

    # Restarted (on another port, as if it had been taken): the same parent and trial runs.
    other_port = tracking_server._port_free("127.0.0.1", 0)
    restarted = TrackingServer(tmp_path, port=other_port, **LOCAL)
    new_uri = restarted.start(watch=False)
    try:
        assert new_uri != uri
        trials = [finished_trial(slot) for slot in range(9)]
        for _ in range(2):  # the backfill of select-best; the second one changes nothing
            for slot in range(9):  # forget "synced", so the second pass really compares
                folder = tmp_path / "trials" / str(slot)
                record = tracking.read_run_record(folder)
                record.pop("synced_uri", None)
                if record:
                    tracking.write_run_record(folder, record)
            parent = sync_study(tmp_path, new_uri, EXPERIMENT, "avg_f1", trials)
            client, parents, runs = trial_runs(new_uri)
            assert [p.info.run_id for p in parents] == [parent]
            assert sorted(int(r.data.tags["octopi.slot"]) for r in runs) == list(range(9))
            for run in runs:
                slot = int(run.data.tags["octopi.slot"])
                assert run.info.status == "FINISHED"
                assert run.data.tags["mlflow.parentRunId"] == parent
                assert run.data.params["optuna.lr"] == str(0.001 * (slot + 1))
                assert run.data.metrics["best_avg_f1"] == pytest.approx(0.5 + slot / 100)
                assert_complete(client, run, slot, epochs)
                record = tracking.read_run_record(tmp_path / "trials" / str(slot))
                assert record["run_id"] == run.info.run_id
                assert record.get("synced_uri") == new_uri
    finally:
        restarted.stop()
    parents_file = yaml.safe_load((tmp_path / "mlflow_parent_run.json").read_text())
    assert set(parents_file) == {uri, new_uri} and len(set(parents_file.values())) == 1


def test_a_killed_head_takes_its_server_with_it(tmp_path: Path) -> None:
    head = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from octopi.tracking_server import TrackingServer\n"
            "server = TrackingServer(sys.argv[1], '127.0.0.1', '127.0.0.1')\n"
            "print(server.start(), flush=True)\n"
            "time.sleep(600)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        uri = head.stdout.readline().strip()
        assert answers(uri), uri
        server_pid = read_record(tmp_path)["pid"]
    finally:
        head.kill()  # kill -9: no clean-up code runs in the head
        head.wait()
    try:
        wait_for(lambda: group_gone(server_pid), 30, "the server to stop with its head")
        assert not answers(uri)
    finally:
        tracking_server.stop_process_group(server_pid, timeout_s=5)  # if the test failed
