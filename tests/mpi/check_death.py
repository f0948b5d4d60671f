#!/usr/bin/env python3
"""A worker that dies ends the MPI job, with a message, and nobody hangs.

    check_death.py MPIEXEC TEST_MPI_POOL

Runs `MPIEXEC --oversubscribe -n 3 TEST_MPI_POOL --crash` (a task raises
SIGSEGV), `... --crash-big` (the same with a 4 MiB input, which goes through
shared memory) and `... --exit` (a task calls exit(3)): the job must end within
60 s with a non-zero status, and the output carry the worker's own line
("cfutures: MPI worker rank R on host H: ..."). Then the same without
mpiexec (an MPI singleton with spawned workers, whose death the launcher
does not turn into the end of the parent): the pool's watch must fail the
future with CF_EBROKEN naming the worker, and refuse later submits (the
program then exits 3). Exit 0 if all pass."""
import subprocess
import sys
import time

mpiexec, exe = sys.argv[1], sys.argv[2]
want = {"--crash": "fatal signal 11 in a task",
        "--crash-big": "fatal signal 11 in a task",  # 4 MiB in shared memory
        "--exit": "a task called exit()"}
failed = 0
for launch in ([mpiexec, "--oversubscribe", "-n", "3"], []):
    for mode, text in want.items():
        cmd = launch + [exe, mode]
        t0 = time.monotonic()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            print("FAIL %s: still running after 60 s" % " ".join(cmd))
            failed += 1
            continue
        out = r.stdout + r.stderr
        ok = (r.returncode != 0 and "cfutures: MPI worker rank" in out
              and text in out and "outlived" not in out)
        if not launch:  # spawned: the pool breaks, the program goes on
            ok = ok and r.returncode == 3 and "future failed: MPI worker rank" \
                in out and "the pool is broken" in out \
                and "submit after: CF_EBROKEN" in out
        print("%s %s: exit %d in %.1f s" % ("ok  " if ok else "FAIL",
                                           " ".join(cmd), r.returncode,
                                           time.monotonic() - t0))
        if not ok:
            failed += 1
            print(out[-3000:])
sys.exit(1 if failed else 0)
