"""Python's ThreadPoolExecutor (2 workers): submit -> result round trip of a
tiny task on a warm pool, 10,000 times; median and p99 in microseconds.
With the argument "loaded" (run by bench/loaded, every core busy with
another process) the rows are named rtt_loaded_*."""
import sys
import time
from concurrent.futures import ThreadPoolExecutor

N = 10_000
if sys.argv[1:] not in ([], ["loaded"]):
    sys.exit("usage: rtt_python.py [loaded]")
WORKLOAD = "rtt_loaded" if sys.argv[1:] == ["loaded"] else "rtt"


def tiny(x):
    return x


def round_trip(ex):
    t0 = time.perf_counter()
    ex.submit(tiny, 1).result()
    return (time.perf_counter() - t0) * 1e6


with ThreadPoolExecutor(max_workers=2) as ex:
    for _ in range(500):  # warm up: both workers exist
        round_trip(ex)
    us = sorted(round_trip(ex) for _ in range(N))
print(f"RESULT workload={WORKLOAD}_median impl=Python value={us[N // 2]:.3f} unit=us")
print(f"RESULT workload={WORKLOAD}_p99 impl=Python value={us[N * 99 // 100]:.3f} unit=us")
