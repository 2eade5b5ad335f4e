# A probe for the server's garbage-collector pauses, not part of the benchmark run: put this
# folder first on PYTHONPATH and set CLARION_GC_PROBE=1, and every collection over 5 ms is logged
# to stderr (generation, ms), and once the type counts when a full collection walks > 500,000
# objects:
#   PYTHONPATH=bench/gcprobe CLARION_GC_PROBE=1 .venv/bin/python bench/run.py --peers clarion \
#       --conns 1000 --scenarios latency,gc --plots none
#   grep 'GCPROBE gen=2' bench/.work/logs/<stamp>/clarion-latency*.log
import gc
import os
import sys
import time

if os.environ.get("CLARION_GC_PROBE"):
    _start = [0.0]

    def _cb(phase, info):
        if phase == "start":
            _start[0] = time.perf_counter()
        else:
            ms = (time.perf_counter() - _start[0]) * 1000
            if ms > 5:
                print(
                    f"GCPROBE gen={info['generation']} ms={ms:.1f} collected={info['collected']} "
                    f"t={time.time():.3f}",
                    file=sys.stderr,
                    flush=True,
                )

    gc.callbacks.append(_cb)

if os.environ.get("CLARION_GC_PROBE"):
    _dumped = [False]

    def _dump(phase, info):
        if phase == "stop" and info["generation"] == 2 and not _dumped[0]:
            objs = gc.get_objects()
            if len(objs) > 500_000:
                _dumped[0] = True
                from collections import Counter

                c = Counter(type(o).__qualname__ for o in objs)
                print(
                    f"GCTYPES total={len(objs)} "
                    + " ".join(f"{k}={v}" for k, v in c.most_common(25)),
                    file=sys.stderr,
                    flush=True,
                )

    gc.callbacks.append(_dump)
