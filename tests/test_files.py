"""grain pipelines over image files: the sampler's batches, and padded eval batches."""

import numpy as np
import pytest
from PIL import Image

from mtl_jax import data, sharding


@pytest.fixture
def numbered_files(tmp_path):
  """21 tiny gray PNGs whose pixels hold their own index, and labels derived from it."""
  paths = []
  for i in range(21):
    path = str(tmp_path / f"{i:02d}.png")
    Image.fromarray(np.full((4, 4), i, np.uint8)).save(path)
    paths.append(path)
  index = np.arange(21)
  labels = {"parity": (index % 2).astype(np.int32), "half": (index / 2).astype(np.float32)}
  return paths, labels


_DECODE = data.image_decoder((4, 4), num_channels=1, norm=1.0)  # pixel value = file index


def _indices(batch):
  return batch["inputs"][:, 0, 0, 0].astype(int)


def test_image_batches_give_the_sampler_rows_and_their_labels(numbered_files):
  paths, labels = numbered_files
  sampler = data.Sampler(21, 8, seed=0, probabilities=np.linspace(0, 1, 21))
  batches = list(data.image_batches(paths, labels, sampler, range(6), _DECODE,
                                    mesh=sharding.make_mesh()))
  assert len(batches) == 6
  for step, batch in enumerate(batches):
    expected = sampler.indices([step])[0]
    assert batch["inputs"].shape == (8, 4, 4, 1) and batch["inputs"].dtype == np.float32
    np.testing.assert_array_equal(_indices(batch), expected)
    np.testing.assert_array_equal(batch["labels"]["parity"], labels["parity"][expected])
    np.testing.assert_array_equal(batch["labels"]["half"], labels["half"][expected])


def test_a_resumed_pipeline_continues_with_the_same_batches(numbered_files):
  paths, labels = numbered_files
  sampler = data.Sampler(21, 8, seed=5)
  load = lambda steps, **kw: [_indices(b) for b in data.image_batches(
      paths, labels, sampler, steps, _DECODE, mesh=sharding.make_mesh(), **kw)]
  whole = load(range(7))
  np.testing.assert_array_equal(load(iter(range(4, 7)), num_workers=0), whole[4:])
  np.testing.assert_array_equal(load(range(7), cache=True, num_workers=3), whole)


def test_eval_batches_cover_every_row_once_in_order_then_padding(numbered_files):
  paths, labels = numbered_files
  batches = list(data.eval_image_batches(paths, labels, 8, _DECODE,
                                         mesh=sharding.make_mesh()))
  assert [b["inputs"].shape[0] for b in batches] == [8, 8, 8]
  rows = np.concatenate([_indices(b) for b in batches])
  np.testing.assert_array_equal(rows[:21], np.arange(21))
  last = batches[-1]
  np.testing.assert_array_equal(last["inputs"][5:], 0.0)
  np.testing.assert_array_equal(last["labels"]["parity"], [0, 1, 0, 1, 0, -1, -1, -1])
  assert last["labels"]["parity"].dtype == np.int32
  np.testing.assert_array_equal(np.isnan(last["labels"]["half"]), [False] * 5 + [True] * 3)


def test_eval_batches_without_labels_for_prediction(numbered_files):
  paths, _ = numbered_files
  batches = list(data.eval_image_batches(paths[:16], {}, 8, _DECODE, mesh=sharding.make_mesh()))
  assert len(batches) == 2 and batches[1]["labels"] == {}
  np.testing.assert_array_equal(_indices(batches[1]), np.arange(8, 16))


def test_label_and_path_counts_must_match(numbered_files):
  paths, labels = numbered_files
  with pytest.raises(ValueError, match="task 'parity' has 21 labels for 20 files"):
    data.eval_image_batches(paths[:20], labels, 8, _DECODE, mesh=sharding.make_mesh())
