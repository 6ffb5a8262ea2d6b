"""The onboard benchmarks (torch-free), run by ``planner-runtime bench``.

- ``stats``: the one summary of latency readings (n, median, p99, mean, min, max) and the
  one latency histogram, used by every bench and every report of median / p99 in the
  project;
- ``cadence``: one engine back to back vs paced at its chunk period (``--what cadence``);
- ``service``: the service's end-to-end ZeroMQ latency against the sampler alone and a
  bare-server floor (``--what service``).

The sampler section (ONNX vs eager torch) needs torch and lives in ``export/bench.py``,
the command's module; the controller loop's bench is the controller's, ``robot/bench_loop.py``.
Commands and current numbers: docs/benchmarks.md.
"""
