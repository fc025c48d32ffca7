"""Same-run baseline for wflo-bus's publish bench: the confluent-kafka (librdkafka) producer.

Usage: confluent_baseline.py BOOTSTRAP TOPIC COUNT SIZE COMPRESSION
Sends COUNT messages of SIZE bytes (keys k0..k63, the same bytes the Rust bench sends) with
acks=all and linger.ms=5, waits until every delivery report arrived, and prints one JSON line:
{"messages": n, "delivered": n, "errors": n, "seconds": s, "rate": msgs_per_s, "librdkafka": v}.
"""

import json
import sys
import time

from confluent_kafka import Producer, libversion


def payload(size: int) -> bytes:
    # Deterministic, JSON-like, mildly compressible: the same generator as benches/bus.rs.
    out = bytearray()
    x = 0x2545F491
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789"
    while len(out) < size:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(alphabet[x % len(alphabet)])
    return bytes(out)


def main() -> None:
    bootstrap, topic, count, size, compression = sys.argv[1:6]
    count, size = int(count), int(size)
    value = payload(size)
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": compression,
            "enable.idempotence": False,
            "queue.buffering.max.messages": max(100000, count),
        }
    )
    stats = {"delivered": 0, "errors": 0}

    def on_delivery(err, _msg):
        if err is None:
            stats["delivered"] += 1
        else:
            stats["errors"] += 1

    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                p.produce(topic, value=value, key=f"k{i % 64}", on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.001)
        p.poll(0)
    p.flush(60)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "messages": count,
                "delivered": stats["delivered"],
                "errors": stats["errors"],
                "seconds": seconds,
                "rate": stats["delivered"] / seconds,
                "librdkafka": libversion()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
