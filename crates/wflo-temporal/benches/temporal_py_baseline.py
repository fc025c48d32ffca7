"""Baseline for `cargo xtask bench temporal`: the same 3-activity no-op workflow written with the
Temporal Python SDK (`pip install temporalio`), against the same server, worker in this process,
unsandboxed workflow runner. Prints one JSON line: {"p50_ms": .., "wps": .., ...}.

usage: temporal_py_baseline.py ADDRESS TASK_QUEUE LATENCY_RUNS TOTAL_RUNS CONCURRENCY
"""

import asyncio
import json
import statistics
import sys
import time
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker


@activity.defn
async def noop(step: int) -> int:
    return step


@workflow.defn
class NoopWorkflow:
    @workflow.run
    async def run(self, activities: int) -> int:
        done = 0
        for i in range(activities):
            await workflow.execute_activity(
                noop, i, start_to_close_timeout=timedelta(seconds=10)
            )
            done += 1
        return done


async def one(client: Client, queue: str) -> float:
    t0 = time.perf_counter()
    result = await client.execute_workflow(
        NoopWorkflow.run, 3, id=f"{queue}-{uuid.uuid4().hex}", task_queue=queue
    )
    assert result == 3, result
    return (time.perf_counter() - t0) * 1000.0


async def main() -> None:
    address, queue, latency_runs, total, concurrency = sys.argv[1:6]
    latency_runs, total, concurrency = int(latency_runs), int(total), int(concurrency)
    target = address.split("://", 1)[-1].rstrip("/")
    client = await Client.connect(target)
    async with Worker(
        client,
        task_queue=queue,
        workflows=[NoopWorkflow],
        activities=[noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        for _ in range(5):
            await one(client, queue)
        lat = [await one(client, queue) for _ in range(latency_runs)]
        remaining = total

        async def runner() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await one(client, queue)

        t0 = time.perf_counter()
        await asyncio.gather(*(runner() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "p50_ms": statistics.median(lat),
                "latencies_ms": lat,
                "wps": total / elapsed,
                "elapsed_s": elapsed,
                "runs": latency_runs,
                "total": total,
                "concurrency": concurrency,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
