# `shmproc start-bench`'s Python side. argv: METHOD RUNS; prints one JSON object:
# {"method": ..., "ns": [start-to-first-message latency of each run, in ns]}
# Each run: time a Process with METHOD from start() to the parent receiving the
# child's first message on a Pipe, then join it.
import json
import multiprocessing as mp
import sys
import time


def child(conn):
    conn.send(1)


def main():
    method, runs = sys.argv[1], int(sys.argv[2])
    ctx = mp.get_context(method)
    if method == "forkserver":
        # Start the server outside the timed runs, as shmproc's start_forkserver does.
        from multiprocessing import forkserver
        forkserver.ensure_running()
    out = []
    for _ in range(runs):
        a, b = ctx.Pipe()
        t0 = time.perf_counter_ns()
        p = ctx.Process(target=child, args=(b,))
        p.start()
        b.close()  # a child that dies gives EOF here, not a hang
        a.recv()
        out.append(time.perf_counter_ns() - t0)
        p.join()
    print(json.dumps({"method": method, "ns": out}))


if __name__ == "__main__":
    main()
