# Python's multiprocessing Queue, Pipe, Manager().dict() and Pool, for `shmproc bench`
# (run as python3 -c). argv: WORKLOAD SYSTEM N WARM [SIZE] (SIZE: the number of keys
# for the dict workloads); prints one JSON object: {"msgs": m, "bytes": b, "secs": s}
# or {"lat_ns": [...]}; exits 1 on a lost or reordered message or a wrong value.
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


MASK64 = (1 << 64) - 1


def key_of(i, keys):
    # splitmix64, as the Rust side's harness::key_of.
    z = (i + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return (z ^ (z >> 31)) % keys


def value_of(k):
    return (k * 3 + 1) & MASK64


def manager_dict(workload, n, warm, keys):
    m = ctx.Manager()
    d = m.dict()
    if workload != "DINS":
        # One call: the proxy pickles the whole dict once.
        d.update({k: value_of(k) for k in range(keys)})
    if workload == "DMIX":
        out = dict_mixed(d, n // 2, keys)
    else:
        steps = [key_of(i, keys) for i in range(n)]
        t0 = None
        for i, k in enumerate(steps):
            if i == warm:
                t0 = time.perf_counter()
            if workload == "DINS":
                d[k] = value_of(k)
            elif d[k] != value_of(k):
                fail(f"key {k}: wrong value {d[k]}")
        out = {"msgs": n - warm, "bytes": 16, "secs": time.perf_counter() - t0}
    m.shutdown()
    return out


def dict_mixed(d, per_worker, keys):
    go = ctx.Event()
    results = ctx.Queue()

    def worker(w, d):
        steps = [key_of((w << 48) | i, keys) for i in range(per_worker)]
        go.wait()
        for i, k in enumerate(steps):
            if i % 10 == 9:
                d[k] = value_of(k)
            elif d[k] != value_of(k):
                fail(f"key {k}: wrong value")
        results.put(time.monotonic_ns())

    procs = [ctx.Process(target=worker, args=(w, d)) for w in range(2)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    t0 = time.monotonic_ns()
    go.set()
    ends = [results.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            fail("a dict worker failed")
    return {"msgs": 2 * per_worker, "bytes": 16, "secs": (max(ends) - t0) / 1e9}


def work(x):
    return (x * 2 + 1) & MASK64


def pool(workload, n, warm):
    with ctx.Pool(2) as p:
        if workload == "PAPPLY":
            lat = []
            clock = time.perf_counter_ns
            for i in range(n):
                t0 = clock()
                r = p.apply(work, (i,))
                dt = clock() - t0
                if r != work(i):
                    fail(f"apply({i}) returned {r}")
                if i >= warm:
                    lat.append(dt)
            return {"lat_ns": lat}
        chunk = {"chunksize": 1} if workload == "PMAP1" else {}
        p.map(work, range(max(warm, 1)), **chunk)
        items = list(range(n))
        t0 = time.perf_counter()
        got = p.map(work, items, **chunk)
        secs = time.perf_counter() - t0
        if got != [work(x) for x in items]:
            fail("wrong map results")
        return {"msgs": n, "bytes": 8, "secs": secs}


def main():
    workload, system, n, warm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if system == "manager":
        out = manager_dict(workload, n, warm, int(sys.argv[5]))
    elif system == "pool":
        out = pool(workload, n, warm)
    elif workload == "RTT":
        out = rtt(system, n, warm)
    elif workload == "MPMC":
        out = mpmc(n)
    else:
        out = one_way(system, n, warm, int(sys.argv[5]))
    print(json.dumps(out))


main()
