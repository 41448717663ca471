"""The TensorFlow-free TensorBoard writer: valid TFRecords of Event protobufs, read back."""

import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

from mtl_jax import events


def test_the_checksum_is_tfrecords_masked_crc32c():
  for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
    assert events.masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)


def test_scalars_images_texts_and_hparams_round_trip(tmp_path):
  writer = events.EventWriter(str(tmp_path))
  writer.write_hparams({"lr": 0.1, "name": "hps", "flag": True})
  writer.write_scalars(10, {"train/a/loss": 0.5})
  writer.write_images(10, {"grad_cosines": np.zeros((1, 4, 5, 3), np.uint8)})
  writer.write_texts(0, {"notes": "a note"})
  writer.close()
  parsed = [event_pb2.Event.FromString(r) for r in events.read_records(writer.path)]
  assert parsed[0].file_version == "brain.Event:2"
  values = {v.tag: v for e in parsed for v in e.summary.value}
  assert values["train/a/loss"].simple_value == 0.5
  assert (values["grad_cosines"].image.height, values["grad_cosines"].image.width) == (4, 5)
  assert values["notes"].tensor.string_val == [b"a note"]
  assert values["_hparams_/session_start_info"].metadata.plugin_data.plugin_name == "hparams"


def test_a_later_file_overrides_earlier_steps_and_a_torn_record_ends_the_file(tmp_path):
  first = events.EventWriter(str(tmp_path))
  first.write_scalars(100, {"loss": 1.0})
  first.write_scalars(200, {"loss": 0.9})  # lost by a kill: the resumed run writes it again
  first.close()
  with open(first.path, "ab") as f:
    f.write(events.record(b"x" * 20)[:15])  # killed in the middle of a record
  second = events.EventWriter(str(tmp_path))
  second.write_scalars(200, {"loss": 0.75})
  second.close()
  assert events.read_scalars(str(tmp_path)) == {"loss": {100: 1.0, 200: 0.75}}
