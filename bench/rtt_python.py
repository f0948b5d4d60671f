"""Python's ThreadPoolExecutor (2 workers): submit -> result round trip of a
tiny task on a warm pool, 10,000 times; median and p99 in microseconds."""
import time
from concurrent.futures import ThreadPoolExecutor

N = 10_000


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
print(f"RESULT workload=rtt_median impl=Python value={us[N // 2]:.3f} unit=us")
print(f"RESULT workload=rtt_p99 impl=Python value={us[N * 99 // 100]:.3f} unit=us")
