"""Python's ProcessPoolExecutor on the process workloads:
python3 python_ppe.py submit | map | rtt"""
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, wait

WORKERS = 2


def tiny(x):
    return x


def item(x):
    return x + 1


def report(workload, value, unit):
    print(f"RESULT workload={workload} impl=Python value={value:.3f} unit={unit}")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "submit"
    with ProcessPoolExecutor(max_workers=WORKERS) as ex:
        wait([ex.submit(tiny, i) for i in range(100)])  # workers started
        if what == "submit":
            n = 10_000
            t0 = time.monotonic()
            wait([ex.submit(tiny, i) for i in range(n)])
            report("proc_submit", n / (time.monotonic() - t0), "tasks/s")
        elif what == "map":
            n = 1_000_000
            t0 = time.monotonic()
            for _ in ex.map(item, range(n), chunksize=1000):
                pass
            report("proc_map", n / (time.monotonic() - t0), "items/s")
        elif what == "rtt":
            us = []
            for _ in range(2000):
                t0 = time.monotonic()
                ex.submit(tiny, 1).result()
                us.append((time.monotonic() - t0) * 1e6)
            report("proc_rtt", statistics.median(us), "us")
        else:
            sys.exit(2)


if __name__ == "__main__":
    main()
