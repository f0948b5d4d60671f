"""The Python echo servers of bench/run green, one per mode, each on one
thread, listening on 127.0.0.1:PORT until killed and echoing whatever a
connection sends until it hangs up:

    echo_python.py gevent|asyncio|uvloop PORT

gevent: a StreamServer, one greenlet per connection (recv, sendall).
asyncio, uvloop: asyncio.start_server, one coroutine per connection
(reader.read, writer.write, drain), on the default loop or on uvloop's."""
import resource
import sys

BACKLOG = 4096


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_gevent(port):
    from gevent.server import StreamServer

    def handle(sock, _addr):
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                sock.sendall(data)
        except OSError:  # the client's reset at the end of a run
            pass
        finally:
            sock.close()

    StreamServer(("127.0.0.1", port), handle, backlog=BACKLOG).serve_forever()


def run_asyncio(port, use_uvloop):
    import asyncio

    async def handle(reader, writer):
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:  # the client's reset at the end of a run
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port,
                                            backlog=BACKLOG)
        async with server:
            await server.serve_forever()

    if use_uvloop:
        import uvloop
        uvloop.install()
    asyncio.run(main())


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("gevent", "asyncio",
                                                  "uvloop"):
        sys.exit("usage: echo_python.py gevent|asyncio|uvloop PORT")
    raise_nofile()
    port = int(sys.argv[2])
    if sys.argv[1] == "gevent":
        run_gevent(port)
    else:
        run_asyncio(port, sys.argv[1] == "uvloop")


main()
