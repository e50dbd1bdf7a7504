"""Class probabilities from `octopi segment` to `octopi localize --threshold` (tiny project)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from octopi.config import PickSpec, TargetSpec
from octopi.data.copick_io import CopickProjects

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_infer_cli import PREDICT, invoke, save_model  # noqa: E402

SOFT = TargetSpec(name="soft", user_id="octopi", session_id="2")
# Peak probability per class in the soft "oracle" segmentation: apo-ferritin stays below 0.5.
PEAKS = {"apo-ferritin": 0.4}
DEFAULT_PEAK = 0.9


def segment(project, tmp_path: Path, *extra: str):
    config, weights = save_model(tmp_path / "model", project)
    return invoke(
        "segment",
        "--config", project.config_path,
        "--model-config", config,
        "--model-weights", weights,
        "--run-ids", project.run_names[0],
        "--output", tmp_path / "segment-out",
        *extra,
    )  # fmt: skip


def hidden_entries(project, run: str) -> list[str]:
    folder = project.root / "data" / "ExperimentRuns" / run / "Segmentations"
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_segment_writes_float16_probabilities_readable_with_copick_and_zarr(
    tiny_project_copy, tmp_path
):
    project = tiny_project_copy
    result = segment(project, tmp_path)
    assert result.exit_code == 0, result.output
    assert "with class probabilities" in result.output
    projects = CopickProjects([project.source])
    ref = projects.resolve(project.run_names[0])
    labels = projects.load_segmentation(ref, project.voxel_size_angstrom, PREDICT)
    channels = projects.probability_channels(ref, project.voxel_size_angstrom, PREDICT)
    objects = projects.objects()
    assert channels == {"background": 0} | {o.name: o.label for o in objects}

    # The documented way in: the label segmentation's store, group "probabilities".
    store = (
        project.root / "data" / "ExperimentRuns" / project.run_names[0] / "Segmentations"
        / f"{project.voxel_size_angstrom:.3f}_octopi_1_predict-multilabel.zarr"
    )  # fmt: skip
    group = zarr.open_group(str(store), mode="r")
    probabilities = group["probabilities/0"][:]
    assert probabilities.shape == (7, *project.shape_zyx)
    assert probabilities.dtype == np.float16
    # float16 noise, plus up to half a stored step of 1/255 in each of the 7 channels
    total = probabilities.astype(np.float32).sum(axis=0)
    np.testing.assert_allclose(total, 1.0, atol=5e-3 + 7 * 0.5 / 255)
    of_label = np.take_along_axis(probabilities, labels[None].astype(np.intp), axis=0)[0]
    np.testing.assert_array_equal(of_label, probabilities.max(axis=0))
    assert group["0"].shape == project.shape_zyx  # copick's labels, untouched
    axes = group["probabilities"].attrs["multiscales"][0]["axes"]
    assert [axis["name"] for axis in axes] == ["c", "z", "y", "x"]
    ribosome = projects.load_probability(ref, project.voxel_size_angstrom, PREDICT, "ribosome")
    np.testing.assert_array_equal(ribosome, probabilities[channels["ribosome"]])
    assert hidden_entries(project, project.run_names[0]) == []
    summary = json.loads((tmp_path / "segment-out" / "segment.json").read_text())
    assert summary["probabilities"] is True


@pytest.mark.filterwarnings("ignore:.*max_foreground_fraction:RuntimeWarning")
def test_segment_without_probabilities_removes_older_ones(tiny_project_copy, tmp_path):
    project = tiny_project_copy
    assert segment(project, tmp_path).exit_code == 0
    result = segment(project, tmp_path, "--no-probabilities")
    assert result.exit_code == 0, result.output
    assert "with class probabilities" not in result.output
    projects = CopickProjects([project.source])
    ref = projects.resolve(project.run_names[0])
    assert projects.probability_channels(ref, project.voxel_size_angstrom, PREDICT) == {}

    # A threshold must act: with labels only it is an error, not silently ignored.
    refused = invoke(
        "localize", "--config", project.config_path, "--run-ids", project.run_names[0],
        "--threshold", "0.3",
    )  # fmt: skip
    assert refused.exit_code != 0
    assert "no class probabilities" in refused.output
    assert "Traceback" not in refused.output
    labels = invoke("localize", "--config", project.config_path, "--run-ids", project.run_names[0])
    assert labels.exit_code == 0, labels.output
    assert "from labels" in labels.output


def write_soft_oracle(project, calibration: dict | None = None) -> None:
    """Probabilities made from the training targets: each class's ball blurred to its peak
    (apo-ferritin 0.4, others 0.9), stored with a label segmentation ``soft,octopi,2`` (and
    ``calibration``, as segment stores a calibrated model's)."""
    projects = CopickProjects([project.source])
    objects = projects.objects()
    channels = {"background": 0} | {o.name: o.label for o in objects}
    voxel = project.voxel_size_angstrom
    for ref in projects.runs():
        labels = projects.load_segmentation(ref, voxel, project.target)
        probabilities = np.zeros((7, *labels.shape), dtype=np.float32)
        for obj in objects:
            blurred = ndi.gaussian_filter((labels == obj.label).astype(np.float32), 1.0)
            probabilities[obj.label] = PEAKS.get(obj.name, DEFAULT_PEAK) * np.clip(
                2 * blurred, 0, 1
            )
        probabilities[0] = 1.0 - probabilities[1:].sum(axis=0)
        shape = (7, *labels.shape)
        writer = projects.probability_writer(ref, voxel, SOFT, channels, shape, calibration)
        with writer:
            writer.write(0, probabilities.astype(np.float16))
            projects.write_segmentation(ref, voxel, SOFT, labels, probabilities=writer)


def localize_counts(project, tmp_path: Path, name: str, *extra: str) -> dict[str, int]:
    result = invoke(
        "localize",
        "--config", project.config_path,
        "--seg-info", str(SOFT),
        "--pick-info", f"octopi,{name}",
        "--output", tmp_path / name,
        *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    per_run = json.loads((tmp_path / name / "picks.json").read_text())
    totals: dict[str, int] = {}
    for per_object in per_run.values():
        for obj, n in per_object.items():
            totals[obj] = totals.get(obj, 0) + n
    return totals


def test_threshold_flags_act_on_the_picks_end_to_end(tiny_project_copy, tmp_path):
    project = tiny_project_copy
    write_soft_oracle(project)
    default = localize_counts(project, tmp_path, "10", "--source", "probabilities")
    localize_counts(project, tmp_path, "14")  # no flags: the argmax labels (the default)
    assert "localized_from: labels" in (tmp_path / "14" / "localize_config.yaml").read_text()
    lowered = localize_counts(project, tmp_path, "11", "--threshold", "0.3")
    per_class = localize_counts(project, tmp_path, "12", "--class-thresholds", "apo-ferritin=0.3")
    strict = localize_counts(project, tmp_path, "13", "--threshold", "0.95")
    truth = {name: sum(run[name] for run in project.summary.runs.values()) for name in default}
    assert default["apo-ferritin"] == 0  # its peak 0.4 is below the default 0.5
    assert per_class["apo-ferritin"] > 0 and lowered["apo-ferritin"] > 0
    assert sum(strict.values()) == 0  # no class reaches 0.95
    for name in default:
        assert lowered[name] >= default[name] >= strict[name], name
        if name != "apo-ferritin":
            assert per_class[name] == default[name], name  # a class threshold acts on its class
    assert per_class["apo-ferritin"] >= 0.8 * truth["apo-ferritin"]
    resolved = (tmp_path / "12" / "localize_config.yaml").read_text()
    assert "localized_from: probabilities" in resolved
    # The thresholded picks are the oracle's: evaluate scores them high.
    metrics = tmp_path / "m.json"
    scored = invoke(
        "evaluate", "--config", project.config_path, "--pred-info", "octopi,12",
        "--output", metrics,
    )  # fmt: skip
    assert scored.exit_code == 0, scored.output
    assert json.loads(metrics.read_text())["weighted_fbeta"] > 0.9, scored.output
    picked = CopickProjects([project.source]).load_picks_angstrom(
        CopickProjects([project.source]).resolve(project.run_names[0]),
        "ribosome",
        PickSpec(user_id="octopi", session_id="11"),
    )
    assert len(picked) > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "labels", "--threshold", "0.3"], "thresholds act on class probabilities"),
        (["--source", "labels", "--class-thresholds", "ribosome=0.3"], "would do nothing"),
        (["--class-thresholds", "ribosome:0.3"], "name=threshold"),
        (["--class-thresholds", "unicorn=0.3"], "unicorn"),
        (["--seg-info", "targets,octopi,1", "--source", "probabilities"], "no class probab"),
    ],
)
def test_threshold_errors(tiny_project, extra, message):
    result = invoke("localize", "--config", tiny_project.config_path, *extra)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_localize_uses_the_stored_calibration_by_default(tiny_project_copy, tmp_path):
    """apo-ferritin peaks at 0.4: the fixed threshold 0.5 never picks it. A calibration
    stored with the probabilities (threshold 0.3) makes the default pick it; --source labels
    and explicit thresholds still decide."""
    project = tiny_project_copy
    calibration = {
        "apo-ferritin": {"threshold": 0.3, "min_size_fraction": 0.05},
        "ribosome": {"threshold": 0.95, "min_size_fraction": 0.05},
    }
    write_soft_oracle(project, calibration)
    projects = CopickProjects([project.source])
    ref = projects.resolve(project.run_names[0])
    stored = projects.probability_calibration(ref, project.voxel_size_angstrom, SOFT)
    assert stored == calibration
    default = localize_counts(project, tmp_path, "20")
    note = invoke("localize", "--config", project.config_path, "--seg-info", str(SOFT)).output
    assert "from class probabilities (the model's calibrated per-class thresholds" in note
    assert "localized_from: probabilities" in (tmp_path / "20" / "localize_config.yaml").read_text()
    localize_counts(project, tmp_path, "21", "--source", "labels")
    assert "localized_from: labels" in (tmp_path / "21" / "localize_config.yaml").read_text()
    fixed = localize_counts(project, tmp_path, "22", "--source", "probabilities")
    assert fixed["apo-ferritin"] == 0
    assert default["apo-ferritin"] > 0
    assert default["ribosome"] == 0 < fixed["ribosome"]  # the calibrated 0.95 acts
    # Classes the calibration does not name keep the settings (0.5): as --source probabilities.
    assert default["thyroglobulin"] == fixed["thyroglobulin"]
    explicit = localize_counts(project, tmp_path, "23", "--class-thresholds", "ribosome=0.3")
    assert explicit["ribosome"] > 0 and explicit["apo-ferritin"] == 0  # given thresholds decide


def test_a_class_calibrated_to_the_argmax_is_picked_from_the_labels(tiny_project_copy, tmp_path):
    """A stored calibration without a threshold for ribosome (calibration found the argmax
    better) picks ribosomes from the stored labels, exactly as --source labels does, while
    the other classes keep their calibrated thresholds."""
    project = tiny_project_copy
    calibration = {
        "ribosome": {"threshold": None, "min_size_fraction": 0.05},
        "apo-ferritin": {"threshold": 0.95, "min_size_fraction": 0.05},
    }
    write_soft_oracle(project, calibration)
    default = localize_counts(project, tmp_path, "30")
    labels = localize_counts(project, tmp_path, "31", "--source", "labels")
    assert default["ribosome"] == labels["ribosome"] > 0
    assert default["apo-ferritin"] == 0 < labels["apo-ferritin"]  # its calibrated 0.95 acts
    projects = CopickProjects([project.source])
    for run in project.run_names:
        ref = projects.resolve(run)
        positions = [
            projects.load_picks_angstrom(ref, "ribosome", PickSpec(user_id="octopi", session_id=s))
            for s in ("30", "31")
        ]
        np.testing.assert_allclose(*(p[np.lexsort(p.T)] for p in positions))


def test_localize_runs_refuses_argmax_classes_it_does_not_localize(tiny_project):
    """A misspelt class in ``localize.argmax_classes`` (a workflow config) is an input error
    before anything is read or written, not a class silently left to its threshold."""
    from octopi.config import LocalizeConfig
    from octopi.errors import InputError
    from octopi.inference.localize_stages import localize_runs

    settings = LocalizeConfig(argmax_classes=["ribosome", "ribosme"])
    with pytest.raises(InputError, match="argmax_classes: ribosme"):
        localize_runs(
            [tiny_project.source], None, PREDICT, PickSpec(user_id="octopi", session_id="31"),
            settings,
        )  # fmt: skip


def test_localize_in_worker_processes_writes_what_one_process_writes(tiny_project_copy):
    """Runs are localized by forked workers and their picks written here, in run order:
    the same picks and scores as one process."""
    from octopi.inference.localize_stages import plan_localize, run_localize
    from octopi.parallel import can_fork

    if not can_fork():
        pytest.skip("needs fork (Linux)")
    project = tiny_project_copy
    write_soft_oracle(project)
    plan = plan_localize([project.source], None, seg_target=SOFT)
    assert len(plan.refs) >= 2  # so that two workers share the runs
    written = {}
    for workers in (1, 2):
        picks = PickSpec(user_id="octopi", session_id=f"w{workers}")
        counts = run_localize(plan, picks, workers=workers)
        assert list(counts) == [ref.key for ref in plan.refs]
        projects = CopickProjects([project.source])
        written[workers] = {
            (ref.key, name): projects.load_picks_angstrom(ref, name, picks)
            for ref in plan.refs
            for name in counts[ref.key]
        }
        assert sum(sum(per_run.values()) for per_run in counts.values()) > 0
    assert written[1].keys() == written[2].keys()
    for key, positions in written[1].items():
        np.testing.assert_array_equal(written[2][key], positions)
