"""mpi4py.futures' MPIPoolExecutor on the MPI workloads, started the same
way as bench/mpi_cfutures (rank 0 runs this, the other ranks serve):
    mpiexec -n 3 python3 -m mpi4py.futures bench/mpi_python.py submit|map|rtt
    mpiexec -n N ... bench/mpi_python.py scale [scale]   (bench/run mpi-scale)
Debian's python3-mpi4py (run with /usr/bin/python3)."""
import statistics
import sys
import time

from concurrent.futures import wait
from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor


def tiny(x):
    return x


def item(x):
    return x + 1


def report(workload, value, unit):
    print(f"RESULT workload={workload} impl=mpi4py value={value:.3f} unit={unit}",
          flush=True)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "submit"
    scale = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with MPIPoolExecutor() as ex:
        wait([ex.submit(tiny, i) for i in range(100)])  # workers up
        if what == "submit":
            n = 10_000 // scale
            t0 = time.monotonic()
            wait([ex.submit(tiny, i) for i in range(n)])
            report("mpi_submit", n / (time.monotonic() - t0), "tasks/s")
        elif what == "map":
            n = 1_000_000 // scale
            t0 = time.monotonic()
            for _ in ex.map(item, range(n), chunksize=1000):
                pass
            report("mpi_map", n / (time.monotonic() - t0), "items/s")
        elif what == "scale":
            # per task against the rank count: wall and rank 0's CPU time
            ranks = MPI.COMM_WORLD.Get_size()
            n = 5_000 // scale
            t0, c0 = time.monotonic(), time.process_time()
            wait([ex.submit(tiny, i) for i in range(n)])
            wall, cpu = time.monotonic() - t0, time.process_time() - c0
            report(f"mpi_sub_us_n{ranks}", wall / n * 1e6, "us/task")
            report(f"mpi_sub_cpu_n{ranks}", cpu / n * 1e6, "us/task")
            n = 200_000 // scale
            t0, c0 = time.monotonic(), time.process_time()
            for _ in ex.map(item, range(n), chunksize=1000):
                pass
            wall, cpu = time.monotonic() - t0, time.process_time() - c0
            report(f"mpi_map_us_n{ranks}", wall / n * 1e6, "us/item")
            report(f"mpi_map_cpu_n{ranks}", cpu / n * 1e6, "us/item")
        elif what == "rtt":
            us = []
            for _ in range(2000 // scale):
                t0 = time.monotonic()
                ex.submit(tiny, 1).result()
                us.append((time.monotonic() - t0) * 1e6)
            report("mpi_rtt", statistics.median(us), "us")
        else:
            sys.exit(2)


if __name__ == "__main__":
    main()
