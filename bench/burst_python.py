"""Python's ThreadPoolExecutor (2 workers): 100,000 tiny tasks submitted from
the main thread, then waited for; reported per second."""
import time
from concurrent.futures import ThreadPoolExecutor, wait

N = 100_000


def tiny(x):
    return x


with ThreadPoolExecutor(max_workers=2) as ex:
    wait([ex.submit(tiny, i) for i in range(N)])  # warm up: one whole burst
    t0 = time.monotonic()
    wait([ex.submit(tiny, i) for i in range(N)])
    rate = N / (time.monotonic() - t0)
print(f"RESULT workload=burst impl=Python value={rate:.3f} unit=tasks/s")
