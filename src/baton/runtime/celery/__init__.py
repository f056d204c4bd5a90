"""The celery runtime: steps execute on `baton worker` processes, with Redis or RabbitMQ as the broker.

Messages carry ids only (run id, step index, attempts since the step was started, which checkpoint to
read); a run's input and every checkpoint live in the store. Each step goes through the same executor as
on the local runtime, and what comes next is the pattern's plan. Reliability comes from three places:

- the broker: tasks are acknowledged late and rejected when their worker process is lost, so a killed
  worker's step is delivered again (at once for a killed prefork child; when the whole worker is gone, after
  `visibility_timeout` on Redis, as soon as its connection drops on RabbitMQ);
- the store: a worker takes a step through a lease on its row, so two workers never run it at once, and a
  step whose checkpoint was committed is never run again, however often its message is delivered;
- Celery's countdown: a transient failure is retried by re-queueing the task with exponential backoff and
  jitter, never by sleeping in a worker.

Parallel branches (a supervisor's workers) fan out as a Celery chord, whose join asks the plan again from
the store (not from Celery's results). One job a module: `_client` (what callers use), `_app` (the Celery
app's configuration), `_tasks` (the tasks and the step state machine), `_worker` (a worker process's
lifecycle).
"""

from baton._extras import require

# Before the modules below import Celery: without the extra, one error that names it.
require("celery", "the celery runtime")

from baton.runtime.celery._app import QUEUE, broker_display, celery_app, check_broker, worker_argv  # noqa: E402
from baton.runtime.celery._client import CeleryRuntime  # noqa: E402

__all__ = ["QUEUE", "CeleryRuntime", "broker_display", "celery_app", "check_broker", "worker_argv"]
