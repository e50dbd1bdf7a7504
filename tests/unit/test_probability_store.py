"""The probability store: streamed float16 writes, atomic replacement, failures leave no trace."""

from __future__ import annotations

import numpy as np
import pytest

from octopi.config import TargetSpec
from octopi.data.copick_io import CopickProjects

TARGET = TargetSpec(name="predict", user_id="octopi", session_id="5")
CHANNELS = {"background": 0, "apo-ferritin": 1, "ribosome": 2}


def hidden(project, run: str) -> list[str]:
    folder = project.root / "data" / "ExperimentRuns" / run / "Segmentations"
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def random_probabilities(shape_zyx, seed: int) -> np.ndarray:
    """(3, Z, Y, X) float16 softmax of noise."""
    logits = np.random.default_rng(seed).normal(size=(3, *shape_zyx))
    e = np.exp(logits)
    return (e / e.sum(axis=0)).astype(np.float16)


def write(projects, ref, shape, probabilities, step: int) -> None:
    writer = projects.probability_writer(ref, 20.0, TARGET, CHANNELS, (3, *shape))
    with writer:
        for z in range(0, shape[0], step):  # uneven steps across the 16-plane chunks
            writer.write(z, probabilities[:, z : z + step])
        labels = probabilities.argmax(axis=0).astype(np.uint8)
        projects.write_segmentation(ref, 20.0, TARGET, labels, probabilities=writer)


def with_old_segmentation(project, seed: int):
    """(projects, ref, shape, old probabilities) of the tiny project's first run, with a
    segmentation and its probabilities already written from ``old``."""
    projects = CopickProjects([project.source])
    ref = projects.resolve(project.run_names[0])
    shape = project.shape_zyx
    old = random_probabilities(shape, seed=seed)
    write(projects, ref, shape, old, 8)
    return projects, ref, shape, old


@pytest.mark.parametrize("step", [1, 5, 16, 40])
def test_planes_streamed_in_any_steps_read_back_exactly(tiny_project_copy, step):
    project = tiny_project_copy
    projects = CopickProjects([project.source])
    ref = projects.resolve(project.run_names[0])
    probabilities = random_probabilities(project.shape_zyx, seed=step)
    write(projects, ref, project.shape_zyx, probabilities, step)
    assert projects.probability_channels(ref, 20.0, TARGET) == CHANNELS
    for name, channel in CHANNELS.items():
        stored = projects.load_probability(ref, 20.0, TARGET, name)
        assert stored.dtype == np.float16 and stored.shape == project.shape_zyx
        np.testing.assert_array_equal(stored, probabilities[channel])
    assert hidden(project, project.run_names[0]) == []


def test_a_failed_segmentation_keeps_the_old_one_and_leaves_nothing(tiny_project_copy):
    project = tiny_project_copy
    projects, ref, shape, old = with_old_segmentation(project, seed=1)
    writer = projects.probability_writer(ref, 20.0, TARGET, CHANNELS, (3, *shape))
    with pytest.raises(RuntimeError), writer:
        writer.write(0, random_probabilities(shape, seed=2)[:, :20])
        assert len(hidden(project, project.run_names[0])) == 1  # the partial store is hidden
        raise RuntimeError("killed mid-run")
    assert hidden(project, project.run_names[0]) == []
    np.testing.assert_array_equal(projects.load_probability(ref, 20.0, TARGET, "ribosome"), old[2])


def test_out_of_order_or_incomplete_planes_are_refused(tiny_project_copy):
    project = tiny_project_copy
    projects = CopickProjects([project.source])
    ref = projects.resolve(project.run_names[0])
    shape = project.shape_zyx
    planes = random_probabilities(shape, seed=3)
    with projects.probability_writer(ref, 20.0, TARGET, CHANNELS, (3, *shape)) as writer:
        writer.write(0, planes[:, :4])
        with pytest.raises(ValueError, match="in order"):
            writer.write(8, planes[:, 8:12])
        with pytest.raises(ValueError, match="incomplete"):
            projects.write_segmentation(ref, 20.0, TARGET, planes.argmax(0).astype(np.uint8),
                                        probabilities=writer)  # fmt: skip
    assert hidden(project, project.run_names[0]) == []


class _FailingChannel:
    """Stands in for the zarr array: writes of ``channel`` from plane ``first`` on fail as on a
    full disk."""

    def __init__(self, array, channel: int, first: int):
        self.array, self.channel, self.first = array, channel, first

    def __setitem__(self, key, value) -> None:
        if key[0] == self.channel and key[1].start >= self.first:
            raise OSError(28, "No space left on device")
        self.array[key] = value


@pytest.mark.parametrize("failure", ["first row", "last row", "missing planes"])
def test_a_failed_probability_write_keeps_the_old_segmentation(tiny_project_copy, failure):
    """Planes are written by background threads: their failure surfaces before the old
    segmentation is replaced, so labels and probabilities stay the old ones, nothing hidden."""
    project = tiny_project_copy
    projects, ref, shape, old = with_old_segmentation(project, seed=4)
    new = random_probabilities(shape, seed=5)
    writer = projects.probability_writer(ref, 20.0, TARGET, CHANNELS, (3, *shape))
    if failure != "missing planes":  # the tiny project's 32 planes are two rows of chunks
        writer._array = _FailingChannel(writer._array, 2, first=0 if failure == "first row" else 16)
    planes = shape[0] - 3 if failure == "missing planes" else shape[0]
    error = ValueError if failure == "missing planes" else OSError
    with writer, pytest.raises(error):  # from a later write() or from write_segmentation
        writer.write(0, new[:, :planes])
        projects.write_segmentation(ref, 20.0, TARGET, new.argmax(0).astype(np.uint8),
                                    probabilities=writer)  # fmt: skip
    assert hidden(project, project.run_names[0]) == []
    labels = projects.load_segmentation(ref, 20.0, TARGET)
    np.testing.assert_array_equal(labels, old.argmax(0))
    np.testing.assert_array_equal(projects.load_probability(ref, 20.0, TARGET, "ribosome"), old[2])
