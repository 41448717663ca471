"""TensorBoard event files without TensorFlow: a writer and a reader of scalars.

An events file is a sequence of TFRecords (length u64, masked CRC-32C of the length, the data,
masked CRC-32C of the data), each an `Event` protobuf; the protobuf classes come from the
`tensorboard` package, which does not import TensorFlow for them. clu's `SummaryWriter`
imports TensorFlow (4-5 s of every start, 1.3 GB installed) and tensorboardX imports PyTorch
when it is installed (0.8-1.5 s); this module's imports take ~50 ms. Figures: the README's
"Measured" section.
"""

from __future__ import annotations

import glob
import io
import os
import socket
import struct
import time
from typing import Any, Iterator, Mapping

import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.proto import tensor_pb2
from tensorboard.compat.proto import tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

FILE_PATTERN = "events.out.tfevents.*"


def _crc32c_table() -> tuple[int, ...]:
  """The byte table of CRC-32C (Castagnoli, reflected polynomial 0x82F63B78)."""
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum: CRC-32C of `data`, rotated right by 15 bits plus a constant."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
  """`data` framed as one TFRecord."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data
          + struct.pack("<I", masked_crc32c(data)))


def _plugin(name: str, content: bytes = b"") -> summary_pb2.SummaryMetadata:
  return summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=name, content=content))


def _png(image: np.ndarray) -> bytes:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
  return buffer.getvalue()


def _hparam_value(value: Any):
  if isinstance(value, bool):
    return {"bool_value": value}
  if isinstance(value, (int, float)):
    return {"number_value": float(value)}
  return {"string_value": str(value)}


class EventWriter:
  """Writes scalars, images, texts and hparams to a new events file in `logdir`.

  The method names and arguments are clu's `MetricWriter`'s (those the loop calls).
  """

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, "ab")  # pylint: disable=consider-using-with
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event: event_pb2.Event) -> None:
    self._file.write(record(event.SerializeToString()))

  def _summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=values)))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    self._summary(step, [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                         for k, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """`images`: {tag: u8[1, H, W, 3]} (clu's batch-of-one convention) or u8[H, W, 3]."""
    values = []
    for tag, image in images.items():
      image = np.asarray(image)
      image = image[0] if image.ndim == 4 else image
      values.append(summary_pb2.Summary.Value(tag=tag, image=summary_pb2.Summary.Image(
          height=image.shape[0], width=image.shape[1], colorspace=image.shape[2],
          encoded_image_string=_png(image))))
    self._summary(step, values)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    self._summary(step, [summary_pb2.Summary.Value(
        tag=tag, metadata=_plugin("text"), tensor=tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[text.encode()],
            tensor_shape=tensor_shape_pb2.TensorShapeProto()))
                         for tag, text in texts.items()])

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """The run's hyper-parameters, for TensorBoard's HParams tab (a session start)."""
    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for key, value in hparams.items():
      info.hparams[key].CopyFrom(_struct_value(value))
    content = plugin_data_pb2.HParamsPluginData(version=0, session_start_info=info)
    self._summary(0, [summary_pb2.Summary.Value(
        tag="_hparams_/session_start_info",
        metadata=_plugin("hparams", content.SerializeToString()))])

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def _struct_value(value: Any):
  from google.protobuf import struct_pb2  # pylint: disable=import-outside-toplevel
  return struct_pb2.Value(**_hparam_value(value))


def read_records(path: str) -> Iterator[bytes]:
  """The data of each TFRecord in `path`; stops at a truncated or corrupt record (a run
  killed mid-write)."""
  with open(path, "rb") as f:
    while True:
      header = f.read(12)
      if len(header) < 12:
        return
      (length,), (length_crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
      if masked_crc32c(header[:8]) != length_crc:
        return
      data, footer = f.read(length), f.read(4)
      if len(footer) < 4 or struct.unpack("<I", footer)[0] != masked_crc32c(data):
        return
      yield data


def read_scalars(logdir: str) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of every scalar in `logdir`'s events files, oldest file first, so a
  step written again by a resumed run keeps its latest value."""
  scalars: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, FILE_PATTERN))):
    for data in read_records(path):
      event = event_pb2.Event.FromString(data)
      for value in event.summary.value:
        if value.WhichOneof("value") == "simple_value":
          scalars.setdefault(value.tag, {})[event.step] = value.simple_value
  return scalars
