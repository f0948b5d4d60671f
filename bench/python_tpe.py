"""Python's ThreadPoolExecutor on the thread-pool workloads:
python3 python_tpe.py burst | rtt | idle"""
import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait

WORKERS = 2


def tiny(x):
    return x


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def report(workload, value, unit):
    print(f"RESULT workload={workload} impl=Python value={value:.3f} unit={unit}")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "burst"
    with ThreadPoolExecutor(max_workers=WORKERS) as ex:
        if what == "burst":
            n = 100_000
            wait([ex.submit(tiny, i) for i in range(1000)])
            t0 = time.monotonic()
            wait([ex.submit(tiny, i) for i in range(n)])
            report("burst", n / (time.monotonic() - t0), "tasks/s")
        elif what == "rtt":
            us = []
            for _ in range(10_000):
                t0 = time.monotonic()
                ex.submit(tiny, 1).result()
                us.append((time.monotonic() - t0) * 1e6)
            us.sort()
            report("rtt_median", statistics.median(us), "us")
            report("rtt_p99", us[len(us) * 99 // 100], "us")
        elif what == "idle":
            wait([ex.submit(tiny, i) for i in range(100_000)])
            c0 = cpu()
            time.sleep(2)
            report("idle_cpu", (cpu() - c0) * 1e3, "ms/2s")
        else:
            sys.exit(2)


if __name__ == "__main__":
    main()
