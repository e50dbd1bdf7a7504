"""The probability store: streamed float16 writes, atomic replacement, failures leave no trace."""

from __future__ import annotations

import numpy as np
import pytest

from octopi.config import TargetSpec
from octopi.data.copick_io import CopickProjects

TARGET = TargetSpec(name="predict", user_id="octopi", session_id="5")
CHANNELS = {"background": 0, "apo-ferritin": 1, "ribosome": 2}


# On disk the probabilities are uint8 steps of 1/255: read back, each is within half a step of
# what was written (and float16's own rounding of the encoder's arithmetic and of k/255).
HALF_STEP = 0.5 / 255 + 2**-9


def assert_stored(stored: np.ndarray, written: np.ndarray) -> None:
    """``stored`` is ``written`` to the nearest 1/255 step, read back as float16."""
    assert stored.dtype == np.float16 and stored.shape == written.shape
    steps = stored.astype(np.float64) * 255
    assert np.abs(steps - np.rint(steps)).max() < 0.13  # on the 1/255 grid (float16 of k/255)
    assert np.abs(stored.astype(np.float64) - written.astype(np.float64)).max() <= HALF_STEP


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
        assert_stored(stored, probabilities[channel])
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
    assert_stored(projects.load_probability(ref, 20.0, TARGET, "ribosome"), old[2])


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
    assert_stored(projects.load_probability(ref, 20.0, TARGET, "ribosome"), old[2])


def _probability_array(project, run: str):
    import zarr

    folder = project.root / "data" / "ExperimentRuns" / run / "Segmentations"
    (store,) = folder.glob("*_octopi_5_predict-multilabel.zarr")
    return zarr.open(str(store / "probabilities" / "0"), mode="r+"), store


def test_probabilities_are_uint8_steps_on_disk(tiny_project_copy):
    """Chunks hold one byte per voxel and channel (declared in .zarray, so any zarr reader
    decodes them to float16), and a trained-like volume compresses far below float16."""
    project = tiny_project_copy
    _, _, shape, written = with_old_segmentation(project, seed=6)
    array, store = _probability_array(project, project.run_names[0])
    (steps,) = array.filters
    assert (steps.codec_id, np.dtype(steps.astype), steps.scale) == ("fixedscaleoffset", "u1", 255)
    assert array.dtype == np.float16
    chunk = (store / "probabilities" / "0" / "2" / "0" / "0" / "0").read_bytes()
    assert len(array.compressor.decode(chunk)) == 16 * 256 * 256  # a byte per element (float16: 2)
    assert_stored(array[2], written[2])  # decoded by numcodecs' own FixedScaleOffset


def test_the_fast_encoder_matches_numcodecs_to_one_step():
    """Ours encodes in float32, numcodecs' in (emulated) float16: they may differ at a tie."""
    from numcodecs import FixedScaleOffset

    from octopi.data.probability_store import _STEPS_OF_1_255

    values = random_probabilities((16, 64, 64), seed=9)
    theirs = FixedScaleOffset(offset=0, scale=255, dtype="<f2", astype="u1")
    ours = _STEPS_OF_1_255.encode(values)
    assert ours.dtype == np.uint8 and _STEPS_OF_1_255.get_config() == theirs.get_config()
    assert np.abs(ours.astype(int) - theirs.encode(values).astype(int)).max() <= 1
    assert_stored(theirs.decode(ours).reshape(values.shape), values)
    # a value rounded a little past [0, 1] is kept at the end of the range, not wrapped
    edges = _STEPS_OF_1_255.encode(np.array([1.002, 1.01, -0.001], dtype=np.float16))
    assert edges.tolist() == [255, 255, 0]


def test_the_writer_encodes_with_the_fast_encoder(tiny_project_copy):
    """zarr rebuilds filters from their configuration, which would give numcodecs' float16
    encoder back (about 10 times slower); the writer's array keeps ours."""
    from octopi.data.probability_store import _STEPS_OF_1_255

    project = tiny_project_copy
    projects = CopickProjects([project.source])
    ref = projects.resolve(project.run_names[0])
    shape = (3, *project.shape_zyx)
    with projects.probability_writer(ref, 20.0, TARGET, CHANNELS, shape) as writer:
        assert writer._array.filters == [_STEPS_OF_1_255]
        assert writer._array.filters[0] is _STEPS_OF_1_255


def test_plain_float16_probabilities_of_older_stores_still_read(tiny_project_copy):
    """Stores written before the 1/255 steps hold plain float16 chunks: read exactly."""
    import zarr

    project = tiny_project_copy
    projects, ref, shape, _ = with_old_segmentation(project, seed=7)
    _, store = _probability_array(project, project.run_names[0])
    older = random_probabilities(shape, seed=8)
    group = zarr.open_group(str(store / "probabilities"), mode="r+")
    del group["0"]
    group.create_dataset(  # as the writer made them: nested chunk keys, no filter
        "0", data=older, chunks=(1, 16, 256, 256), dtype=np.float16, dimension_separator="/"
    )
    np.testing.assert_array_equal(
        projects.load_probability(ref, 20.0, TARGET, "ribosome"), older[2]
    )
