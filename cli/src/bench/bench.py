# Python's multiprocessing Queue and Pipe, for `shmproc bench` (run as python3 -c).
# argv: WORKLOAD SYSTEM N WARM [SIZE]; prints one JSON object:
# {"msgs": m, "bytes": b, "secs": s} or {"lat_ns": [...]}; exits 1 on a lost or
# reordered message.
import json
import multiprocessing as mp
import struct
import sys
import time

ctx = mp.get_context("fork")


def fail(msg):
    print(json.dumps({"error": msg}))
    sys.exit(1)


def stamped(size, i, buf):
    struct.pack_into("<Q", buf, 0, i)
    struct.pack_into("<Q", buf, size - 8, i)


def seq_of(b):
    first = struct.unpack_from("<Q", b, 0)[0]
    if struct.unpack_from("<Q", b, len(b) - 8)[0] != first:
        fail("torn message")
    return first


def one_way(system, n, warm, size):
    if system == "queue":
        q = ctx.Queue(1024 if size <= 8 else 64)
        send, recv = q.put, q.get
    else:
        r, w = ctx.Pipe(duplex=False)
        if size <= 8:
            send, recv = w.send, r.recv
        else:
            send = w.send_bytes
            rbuf = bytearray(size)

            def recv():
                r.recv_bytes_into(rbuf)
                return rbuf

    def producer():
        if size <= 8:
            for i in range(n):
                send(i)
        else:
            buf = bytearray(size)
            for i in range(n):
                stamped(size, i, buf)
                send(bytes(buf) if system == "queue" else buf)

    p = ctx.Process(target=producer)
    p.start()
    t0 = None
    for i in range(n):
        if i == warm:
            t0 = time.perf_counter()
        m = recv()
        got = m if size <= 8 else seq_of(m)
        if got != i:
            fail(f"message {i} lost or reordered (got {got})")
    secs = time.perf_counter() - t0
    p.join()
    return {"msgs": n - warm, "bytes": size, "secs": secs}


def rtt(system, n, warm):
    if system == "queue":
        there, back = ctx.Queue(16), ctx.Queue(16)
        c_recv, c_send, p_send, p_recv = there.get, back.put, there.put, back.get
    else:
        a, b = ctx.Pipe()
        c_recv, c_send, p_send, p_recv = b.recv, b.send, a.send, a.recv

    def echo():
        for _ in range(n):
            c_send(c_recv())

    p = ctx.Process(target=echo)
    p.start()
    lat = []
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        p_send(i)
        got = p_recv()
        dt = clock() - t0
        if got != i:
            fail(f"reply {i} lost or reordered (got {got})")
        if i >= warm:
            lat.append(dt)
    p.join()
    return {"lat_ns": lat}


def mpmc(n):
    q = ctx.Queue(1024)
    results = ctx.Queue()
    go = ctx.Event()
    stop = -1

    def consumer():
        nxt = [0, 0]
        count = total = 0
        while True:
            item = q.get()
            if item == stop:
                results.put((count, total, time.monotonic_ns()))
                return
            p, i = item >> 48, item & ((1 << 48) - 1)
            if i < nxt[p]:
                fail(f"producer {p}'s message {i} out of order")
            nxt[p] = i + 1
            count += 1
            total += i

    def producer(p):
        go.wait()
        for i in range(n):
            q.put((p << 48) | i)
        q.put(stop)

    procs = [ctx.Process(target=consumer) for _ in range(2)]
    procs += [ctx.Process(target=producer, args=(p,)) for p in range(2)]
    for p in procs:
        p.start()
    t0 = time.monotonic_ns()
    go.set()
    got = [results.get() for _ in range(2)]
    for p in procs:
        p.join()
    count = sum(g[0] for g in got)
    if count != 2 * n or sum(g[1] for g in got) != n * (n - 1):
        fail(f"consumers got {count} items, expected {2 * n}")
    end = max(g[2] for g in got)
    return {"msgs": count, "bytes": 8, "secs": (end - t0) / 1e9}


def main():
    workload, system, n, warm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if workload == "RTT":
        out = rtt(system, n, warm)
    elif workload == "MPMC":
        out = mpmc(n)
    else:
        out = one_way(system, n, warm, int(sys.argv[5]))
    print(json.dumps(out))


main()
