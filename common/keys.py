"""Every Redis key and channel name Corral uses, built in this one module.

RQ's own names (``rq:job:<id>``, ``rq:queue:<name>``, ``rq:queues``) are kept so that RQ's tools see Corral's jobs.
"""

from __future__ import annotations

RQ_JOB_PREFIX = "rq:job:"
RQ_QUEUE_PREFIX = "rq:queue:"
RQ_QUEUES = "rq:queues"
QUEUE_NAME_PREFIX = "ollama:"

WORKERS = "corral:workers"
JANITOR_LOCK = "corral:janitor:lock"
DEADLINES = "corral:deadlines"  # zset: queued job id -> time its queue-wait deadline passes
STATS = "corral:stats"  # hash of counters: submitted, finished:<rq status>, requeued, expired


def queue_name(model: str) -> str:
    """The RQ queue name of a (normalised) model: ``ollama:llama3:latest``."""
    return QUEUE_NAME_PREFIX + model


def queue_key(model: str) -> str:
    return RQ_QUEUE_PREFIX + queue_name(model)


def job_key(job_id: str) -> str:
    return RQ_JOB_PREFIX + job_id


def events_key(job_id: str) -> str:
    """Capped replay stream of a job's events; entry id ``<seq+1>-0``."""
    return f"corral:events:{job_id}"


def chunks_channel(job_id: str) -> str:
    """Pub/sub channel carrying a job's live events."""
    return f"corral:chunks:{job_id}"


def wake_channel(model: str) -> str:
    """Published on every enqueue so that idle workers holding the model pop at once."""
    return f"corral:wake:{model}"


def control_channel(worker_id: str) -> str:
    """Messages to one worker (cancel a running job)."""
    return f"corral:control:{worker_id}"


def worker_key(worker_id: str) -> str:
    """Heartbeat hash of one worker, with a TTL."""
    return f"corral:worker:{worker_id}"


def inflight_key(worker_id: str) -> str:
    """List of the job ids a worker has popped and not finished: what a dead worker leaves behind."""
    return f"corral:inflight:{worker_id}"


def model_workers_key(model: str) -> str:
    """Zset of the workers holding a model, scored by the time their heartbeat expires."""
    return f"corral:model:{model}:workers"


# -- scheduling (docs/scheduling.md) -------------------------------------------------------------------------------
PRIORITIES = ("high", "normal", "low")  # popped in this order
SUBQUEUE_PREFIX = "corral:sq:"  # list per (model, priority, submitter): the fair-share index of queued ids
ACTIVE_PREFIX = (
    "corral:active:"  # zset per (model, priority): submitter -> virtual start time of its next job
)
VTIME = "corral:vtime"  # hash "<model>|<priority>" -> virtual time of the job last popped
WEIGHTS = "corral:weights"  # hash submitter -> fair-share weight (default 1)
WARM_PREFIX = "corral:warm:"  # zset per model: worker -> time its claim to have the model loaded expires
STARTS_PREFIX = "corral:starts:"  # list per model: times of its latest job starts, newest first (for the ETA)
RUNNING = "corral:running"  # hash model -> jobs running now


def subqueue_key(model: str, priority: str, submitter: str) -> str:
    """A submitter's queued job ids for one model and priority, oldest first."""
    return f"{SUBQUEUE_PREFIX}{model}|{priority}|{submitter}"


def active_key(model: str, priority: str) -> str:
    """The submitters with queued jobs for one model and priority, scored by virtual start time."""
    return f"{ACTIVE_PREFIX}{model}|{priority}"


def warm_key(model: str) -> str:
    return WARM_PREFIX + model


def starts_key(model: str) -> str:
    return STARTS_PREFIX + model
