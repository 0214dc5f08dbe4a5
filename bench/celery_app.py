"""The Celery side of the throughput bench: one no-op task, Redis as broker and result
backend. Workers load this module (`celery -A celery_app worker`) with the URLs in
BENCH_CELERY_BROKER and BENCH_CELERY_BACKEND; the bench builds its own app with
`make_app`. Everything else is Celery's defaults (json, prefetch multiplier 4, early acks).
"""

from __future__ import annotations

import os

from celery import Celery


def make_app(broker: str, backend: str) -> Celery:
    app = Celery("bench", broker=broker, backend=backend)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @app.task(name="noop", shared=False)  # type: ignore[untyped-decorator]
    def noop() -> None:
        return None

    return app


app = make_app(
    os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/0"),
    os.environ.get("BENCH_CELERY_BACKEND", "redis://127.0.0.1:6379/1"),
)
