#!/usr/bin/env python3
"""One long `POST /appends` line sent in small chunks, and the server CPU it costs.

A line that arrives in many chunks must not cost its length times its number of chunks (the
server searched its whole buffer for a line end on every chunk until `eventfold_protocol::Lines`).
Usage, against a running `eventfold serve` on this machine (its PID for its CPU time):

    python3 bench/slow-line.py --port 7811 --pid PID --bytes 8000000,16000000,32000000

Python's standard library only. Prints one row per size: the seconds it took to send and the
server's user + system CPU seconds over the request (from /proc/PID/stat).
"""

import argparse
import os
import socket
import time


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(port: int, pid: int, size: int, chunk: int, pause: float) -> tuple[float, float, bytes]:
    head = b'{"stream":"slow-line","events":[{"type":"t","data":{"x":"'
    tail = b'"}}]}\n'
    body = head + b"A" * (size - len(head) - len(tail)) + tail
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(
        b"POST /appends HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    cpu0, t0 = cpu_seconds(pid), time.time()
    for at in range(0, len(body), chunk):
        part = body[at : at + chunk]
        s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        time.sleep(pause)
    s.sendall(b"0\r\n\r\n")
    s.settimeout(300)
    answer = b""
    while b"\r\n0\r\n\r\n" not in answer:
        got = s.recv(65536)
        if not got:
            break
        answer += got
    s.close()
    line = answer.split(b"\r\n\r\n", 1)[-1]
    return time.time() - t0, cpu_seconds(pid) - cpu0, line[:160]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the server's process id")
    p.add_argument("--bytes", default="8000000,16000000,32000000", help="line sizes, comma-separated")
    p.add_argument("--chunk", type=int, default=4096, help="bytes per chunk")
    p.add_argument("--pause", type=float, default=0.001, help="seconds between chunks")
    a = p.parse_args()
    print(f"{'line bytes':>12}  {'chunks':>7}  {'send s':>7}  {'server CPU s':>12}  answer")
    for size in (int(x) for x in a.bytes.split(",")):
        secs, cpu, answer = one(a.port, a.pid, size, a.chunk, a.pause)
        print(f"{size:>12,}  {(size + a.chunk - 1) // a.chunk:>7,}  {secs:>7.1f}  {cpu:>12.2f}  {answer!r}")


if __name__ == "__main__":
    main()
