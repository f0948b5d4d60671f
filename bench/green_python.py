"""Python's green tasks: a greenlet switch, spawn+join of an empty task with
gevent and with asyncio (and uvloop when installed), and the memory of a
sleeping task, each as RESULT lines for bench/run green."""
import asyncio
import sys
import time

SWITCHES = 2_000_000
SPAWNS = 200_000
SLEEPERS = 20_000


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def report(workload, impl, value, unit):
    print(f"RESULT workload={workload} impl={impl} value={value:.3f} unit={unit}")


def bench_greenlet():
    import greenlet

    main = greenlet.getcurrent()

    def run():
        while True:
            main.switch()

    g = greenlet.greenlet(run)
    g.switch()
    for _ in range(10_000):
        g.switch()
    n = SWITCHES // 10  # greenlet is slow: a tenth is plenty
    t0 = time.perf_counter()
    for _ in range(n // 2):
        g.switch()
    report("green_switch", "greenlet", (time.perf_counter() - t0) * 1e9 / n,
           "ns/switch")


def bench_gevent():
    import gevent

    def empty():
        return None

    # Memory first, before anything else has grown the heap.
    before = rss()
    gs = [gevent.spawn(gevent.sleep, 3600) for _ in range(SLEEPERS)]
    gevent.sleep(0.5)
    report("green_sleeper_mem", "gevent", (rss() - before) / SLEEPERS,
           "bytes/task")
    gevent.killall(gs)
    for _ in range(2):
        t0 = time.perf_counter()
        gs = [gevent.spawn(empty) for _ in range(SPAWNS)]
        gevent.joinall(gs)
    report("green_spawn_join", "gevent",
           (time.perf_counter() - t0) * 1e9 / SPAWNS, "ns/task")


async def _asyncio_bench(impl):
    async def empty():
        return None

    # Memory first, before anything else has grown the heap.
    before = rss()
    ts = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(SLEEPERS)]
    await asyncio.sleep(0.5)
    report("green_sleeper_mem", impl, (rss() - before) / SLEEPERS,
           "bytes/task")
    for t in ts:
        t.cancel()
    await asyncio.gather(*ts, return_exceptions=True)
    for _ in range(2):
        t0 = time.perf_counter()
        await asyncio.gather(*[asyncio.create_task(empty())
                               for _ in range(SPAWNS)])
    report("green_spawn_join", impl,
           (time.perf_counter() - t0) * 1e9 / SPAWNS, "ns/task")


def main():
    what = sys.argv[1]
    if what == "greenlet":
        bench_greenlet()
    elif what == "gevent":
        bench_gevent()
    elif what == "asyncio":
        asyncio.run(_asyncio_bench("asyncio"))
    elif what == "uvloop":
        import uvloop
        uvloop.install()
        asyncio.run(_asyncio_bench("uvloop"))


main()
