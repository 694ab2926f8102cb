"""The benchmark harness: one module per contender, each driving separate processes.

- `raw_loop`       plain aio-pika backend and worker processes (no event store): the limit
- `celery_chain`   Celery chains (and a chord) of no-op tasks on the same RabbitMQ
- `stepflow_run`   `stepflow worker` processes and a stepflow backend (`bench_backend`) on
                   SQLite or PostgreSQL
- `common`         loads, results, processes, RSS/CPU sampling, broker clean-up

Every contender is given the same `Load` (N workflows of a shape, started at once or at a
rate) and returns a `RunResult` that it has checked itself: every workflow completed and the
counts match, or it raises `BenchFailure`.
"""
