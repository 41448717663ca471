"""Start-up roll call and liveness watch for the processes of a multi-process run.

JAX's distributed runtime turns a missing peer into a C++ check failure: a process that never
starts makes the others wait `initialization_timeout` and abort with a stack dump, and one that
dies mid-run makes the survivors abort with thread dumps once its heartbeats stop. Before
`jax.distributed.initialize`, this module holds a roll call over plain TCP on the port after
the coordinator's (`--coordinator_address` HOST:PORT -> PORT+1): process 0 waits up to the
timeout for every other process to report, then tells each that all are present. The
connections stay open for the run, watched by a daemon thread: one that closes without a
goodbye means its process died, and the watcher prints one line naming it and ends this
process (exit code 1), before the runtime's abort.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
import time

_HELLO, _GO, _BYE = b"hello", b"go", b"bye"


class PeersMissing(RuntimeError):
  """Processes of a multi-process run did not report within the start-up timeout."""


def _address(coordinator_address: str) -> tuple[str, int]:
  host, _, port = coordinator_address.rpartition(":")
  return host, int(port) + 1


def _line(sock: socket.socket, deadline: float) -> bytes:
  """One newline-terminated message from `sock`, b"" when it closes, TimeoutError at
  `deadline`."""
  data = b""
  while not data.endswith(b"\n"):
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    chunk = sock.recv(64)
    if not chunk:
      return b""
    data += chunk
  return data.strip()


class Watch:
  """The open connections of a roll call; `close` says goodbye (a normal end)."""

  def __init__(self, process_id: int, peers: dict[int, socket.socket]):
    self.process_id = process_id
    self._peers = peers
    self._closing = False
    self._thread = threading.Thread(target=self._watch, daemon=True, name="mtl_jax.peers")
    self._thread.start()

  def _watch(self) -> None:
    open_ = dict(self._peers)
    while open_ and not self._closing:
      try:
        readable, _, _ = select.select(list(open_.values()), [], [], 1.0)
      except (OSError, ValueError):  # closed under it by `close`
        return
      for sock in readable:
        peer = next(p for p, s in open_.items() if s is sock)
        try:
          data = sock.recv(64)
        except OSError:
          data = b""
        if self._closing:
          return
        if _BYE in data:
          del open_[peer]
        elif not data:
          print(f"mtl_jax: error: process {peer} of the run stopped without finishing; "
                f"process {self.process_id} stops too (see process {peer}'s output)",
                file=sys.stderr, flush=True)
          os._exit(1)  # pylint: disable=protected-access  (the runtime would abort anyway)
          return  # (os._exit replaced, as in a test)

  def close(self) -> None:
    """Tells every peer this process ends normally, then closes the connections."""
    self._closing = True
    for sock in self._peers.values():
      try:
        sock.sendall(_BYE + b"\n")
        sock.close()
      except OSError:
        pass


def roll_call(coordinator_address: str, num_processes: int, process_id: int,
              timeout_s: float) -> Watch:
  """Waits until every process of the run has reported, then watches them.

  Raises:
    PeersMissing: naming the processes that did not report within `timeout_s` (process 0),
      or saying that process 0 could not be reached or did not confirm (the others).
  """
  deadline = time.monotonic() + timeout_s
  host, port = _address(coordinator_address)
  if process_id == 0:
    return Watch(0, _gather(port, num_processes, deadline, timeout_s))
  return Watch(process_id, {0: _report(host, port, process_id, deadline, timeout_s)})


def _gather(port: int, num_processes: int, deadline: float,
            timeout_s: float) -> dict[int, socket.socket]:
  peers: dict[int, socket.socket] = {}
  with socket.create_server(("", port), reuse_port=False) as server:
    while len(peers) < num_processes - 1:
      server.settimeout(max(deadline - time.monotonic(), 0.01))
      try:
        sock, _ = server.accept()
        message = _line(sock, deadline)
      except (TimeoutError, socket.timeout):
        break
      if message.startswith(_HELLO):
        peers[int(message.split()[1])] = sock
  missing = sorted(set(range(1, num_processes)) - set(peers))
  if missing:
    for sock in peers.values():
      sock.close()
    raise PeersMissing(f"process(es) {', '.join(map(str, missing))} of {num_processes} did not "
                       f"start within --coordinator_timeout={timeout_s:g} s")
  for sock in peers.values():
    sock.sendall(_GO + b"\n")
  return peers


def _report(host: str, port: int, process_id: int, deadline: float,
            timeout_s: float) -> socket.socket:
  while True:
    try:
      sock = socket.create_connection((host, port), timeout=1.0)
      break
    except OSError:
      if time.monotonic() > deadline:
        raise PeersMissing(f"process {process_id}: process 0 could not be reached at "
                           f"{host}:{port} within --coordinator_timeout={timeout_s:g} s"
                           ) from None
      time.sleep(0.2)
  sock.sendall(_HELLO + f" {process_id}\n".encode())
  try:
    answer = _line(sock, deadline + 5.0)  # process 0 answers at its own deadline
  except (TimeoutError, socket.timeout):
    answer = b""
  if answer != _GO:
    raise PeersMissing(f"process {process_id}: process 0 did not confirm that every process "
                       f"started within --coordinator_timeout={timeout_s:g} s")
  return sock
