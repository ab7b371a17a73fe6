"""Every Redis key and channel name Corral uses, built in this one module.

The Lua scripts build names with the same functions: ``common.scripts`` turns each function here into a Lua
function of the same name and each constant into a Lua constant, so no name is typed twice.

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
HISTORY = "corral:history"  # zset: job id -> creation time (epoch s), trimmed by age and count on enqueue
RECENT_JOBS = "corral:recent"  # list: the newest submitted job ids first, capped (the dashboard's list)
RECENT_JOBS_MAX = 200
TOKENS = "corral:tokens"  # hash: model -> tokens generated (eval_count summed over finished jobs)

# Hosts registered by URL (common/hosts.py): served by a `corral fleet` process, one worker each
# hash: host name -> JSON of what anyone may see (the URL redacted, no token, no header values)
HOSTS = "corral:hosts"
# hash: host name -> JSON of its full URL, token and headers (read by the fleet processes only)
HOST_SECRETS = "corral:hosts:secrets"
HOSTS_CHANNEL = "corral:hosts:changed"  # pub/sub: a host added or removed, or a connection test asked

# Authentication lives under its own prefix so that the workers' Redis user (``~corral:*``) cannot read or
# mint API keys; only the API's user and the operator's reach ``corral-auth:*``.
API_KEYS = "corral-auth:keys"  # hash: sha256 of a key (hex) -> JSON record (id, scope, name, rate, max_jobs)
AUTH_REQUIRED = "corral-auth:required"  # set by `corral keys create`: keys are required from then on


def queue_name(model: str) -> str:
    """The RQ queue name of a (normalised) model: ``ollama:llama3:latest``."""
    return QUEUE_NAME_PREFIX + model


def rq_queue_key(name: str) -> str:
    """The RQ list of a queue by its RQ name (a job hash's ``origin``)."""
    return RQ_QUEUE_PREFIX + name


def queue_key(model: str) -> str:
    return rq_queue_key(queue_name(model))


def job_key(job_id: str) -> str:
    return RQ_JOB_PREFIX + job_id


def events_key(job_id: str) -> str:
    """Capped replay stream of a job's events; entry id ``<seq+1>-0``."""
    return f"corral:events:{job_id}"


def chunks_channel(job_id: str) -> str:
    """Pub/sub channel carrying a job's live events."""
    return f"corral:chunks:{job_id}"


def link_key(channel: str) -> str:
    """Where the API process whose reply channel is ``channel`` takes chunk events directly: ``<host> <port>
    <token>``, with an expiry it renews (common/link.py)."""
    return f"corral:link:{channel}"


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


def host_lease_key(name: str) -> str:
    """String + PX: the id of the fleet process serving a registered host (one fleet serves each host)."""
    return f"corral:hosts:lease:{name}"


def host_test_key(request_id: str) -> str:
    """List + TTL: the answer of a host's connection test, pushed by the fleet process that ran it."""
    return f"corral:hosts:test:{request_id}"


def model_workers_key(model: str) -> str:
    """Zset of the workers holding a model, scored by the time their heartbeat expires."""
    return f"corral:model:{model}:workers"


def histogram_key(name: str) -> str:
    """Hash of one fleet-wide histogram: ``<labels>|<bucket>`` and ``<labels>|sum`` fields."""
    return f"corral:hist:{name}"


def rate_key(key_id: str) -> str:
    """Token bucket (hash: tokens, ts) of one API key's request rate."""
    return f"corral-auth:rate:{key_id}"


def owner_jobs_key(key_id: str) -> str:
    """Set of the job ids an API key has queued or running: what its concurrent-job quota counts."""
    return f"corral:owner:{key_id}:active"


def idempotency_key(owner: str, key: str) -> str:
    """String: the digest of a submit's body and the job ids it created, under the owner's ``Idempotency-Key``
    ('' owner: anonymous), kept for ``CORRAL_IDEMPOTENCY_TTL`` seconds."""
    return f"corral:idem:{owner}|{key}"


# -- scheduling (docs/scheduling.md) -------------------------------------------------------------------------------
PRIORITIES = ("high", "normal", "low")  # popped in this order
SUBQUEUE_PREFIX = "corral:sq:"  # list per (model, priority, submitter): the fair-share index of queued ids
ACTIVE_PREFIX = (
    "corral:active:"  # zset per (model, priority): submitter -> virtual start time of its next job
)
VTIME = "corral:vtime"  # hash "<model>|<priority>" -> virtual time of the job last popped
SERVED = "corral:served"  # hash "<model>|<priority>" -> when that level was last served, or got its first job
WEIGHTS = "corral:weights"  # hash submitter -> fair-share weight (default 1)
WARM_PREFIX = "corral:warm:"  # zset per model: worker -> time its claim to have the model loaded expires
STARTS_PREFIX = "corral:starts:"  # list per model: times of its latest job starts, newest first (for the ETA)
RUNNING = "corral:running"  # hash model -> jobs running now
PARKED_PREFIX = "corral:parked:"  # zset per model: idle worker parked for it -> its free slots
PARK_PREFIX = (
    "corral:park:"  # hash per worker: its park (models, until, claim) or a job handed to it (job, id)
)


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


def parked_key(model: str) -> str:
    return PARKED_PREFIX + model


def park_key(worker_id: str) -> str:
    return PARK_PREFIX + worker_id


# -- model management (docs/models.md) ------------------------------------------------------------------------------
MODEL_OPS = "corral:modelops"  # zset: model operation id -> creation time (GET /models/ops, the dashboard)
MODEL_PULLING = "corral:modelops:pulling"  # hash "<worker>|<model>" -> the operation pulling that model there
MODEL_OPS_LOCK = "corral:modelops:lock"  # string + PX: the worker that re-places the tasks of dead hosts


def model_op_key(op_id: str) -> str:
    """Hash of one model operation (pull, delete, copy, create, load): its hosts and each host's state."""
    return f"corral:modelop:{op_id}"


def model_op_events_key(op_id: str) -> str:
    """Stream of a model operation's events (progress per host, the end), capped, kept as long as the hash."""
    return f"corral:modelop:{op_id}:events"


def model_tasks_key(worker_id: str) -> str:
    """List of the model tasks (JSON) waiting for one worker, oldest first; a task leaves it when done."""
    return f"corral:modeltasks:{worker_id}"
