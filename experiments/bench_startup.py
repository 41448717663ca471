"""Start-up of a command: seconds to its first output line, to a chosen line, and to its exit.

    python experiments/bench_startup.py --rounds=3 --out=FILE.json \
        --checkout=before=/work/main --checkout=after=. -- \
        python -m mtl_jax.main --config=configs/digits.py --workdir={workdir}

Each round runs the command once per checkout (PYTHONPATH and working directory set to it,
a fresh `{workdir}`), interleaved so that a busy machine slows both alike; medians are
reported. `--mark` is a regex: the seconds to the first line matching it are reported too
(default: the first line that reports a training step).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(command: list[str], checkout: str, mark: str) -> dict:
  """{"first_line", "mark", "exit"}: seconds after the start; the output lines too."""
  env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout), PYTHONUNBUFFERED="1")
  start = time.perf_counter()
  process = subprocess.Popen(command, cwd=checkout, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  first = marked = None
  lines = []
  for line in process.stdout:
    now = time.perf_counter() - start
    first = now if first is None else first
    if marked is None and re.search(mark, line):
      marked = now
    lines.append(line.rstrip("\n"))
  process.wait()
  return {"first_line": first, "mark": marked, "exit": time.perf_counter() - start,
          "returncode": process.returncode, "lines": lines}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--checkout", action="append", required=True, help="NAME=PATH")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--mark", default=r"^step\s+\d+")
  parser.add_argument("--out", default="")
  parser.add_argument("command", nargs=argparse.REMAINDER)
  args = parser.parse_args()
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  checkouts = dict(item.split("=", 1) for item in args.checkout)
  runs = {name: [] for name in checkouts}
  for _ in range(args.rounds):
    for name, path in checkouts.items():
      with tempfile.TemporaryDirectory() as workdir:
        result = run_once([c.replace("{workdir}", workdir) for c in command], path, args.mark)
      if result["returncode"] != 0:
        sys.exit(f"{name}: exit {result['returncode']}:\n" + "\n".join(result["lines"][-20:]))
      runs[name].append(result)
  summary = {name: {key: statistics.median(r[key] for r in results if r[key] is not None)
                    for key in ("first_line", "mark", "exit")}
             for name, results in runs.items()}
  for name, values in summary.items():
    print(f"{name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in values.items()))
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump({"command": command, "rounds": args.rounds, "median_seconds": summary,
                 "runs": {n: [{k: r[k] for k in ("first_line", "mark", "exit")} for r in rs]
                          for n, rs in runs.items()}}, f, indent=2)


if __name__ == "__main__":
  main()
