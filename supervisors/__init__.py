"""inorder supervisors: the `Runtime` facade, restart policies, and the runtime's modes.

Users import from here: `Runtime(Bot, ...)`, `RestartPolicy`, `Directive`,
`RedisCluster` (the options of the cluster mode), `ShutdownSummary` (what a
stop returns) and `Observer` (what `observe=` takes). What happens when a
runtime runs is told in supervisors/_runtime.py.

The rooms of the package, each importing only from the rooms below it (type-only
imports included; tests/test_exports.py checks it):

* `adapters/`: the bot frameworks (python-telegram-bot, aiogram, discord.py, Slack
  Bolt), one optional extra each, above the facade they drive; nothing imports them;
* the facade (`_runtime`, `_messaging`, `_introspection`, `_background`,
  `_assembly`, `_shutdown`, `_stats`, `_options`): what users call, and the
  runtime's start and stop; it plugs a mode in at `start()`;
* `testing/`: the real Redis-protocol server the cluster tests run on;
* `cluster/`: the cluster mode, one runtime as a node of several on Redis
  (shards, leases, handoff, fenced commits);
* `durable/`: the durable mode's runtime side, over the journal of
  `actors.journal` (journaling per loop pass, acknowledgements, replay, snapshots);
* the core (`_core`, `_checks`, `_modes`, `_supervisor`, `_ingress`, `_slow`,
  `_policy`, `_snapshots`): the router and the supervisor actor, the same in every
  mode; it names no mode (what it asks of one is `_modes`);
* below them all, `actors`: the kernel (cell, mailbox, user actor, registry).

* `observe/`: metrics (Prometheus), tracing (OpenTelemetry), the admin endpoint
  and its dashboard, and the command line (`python -m supervisors`), optional
  extras beside `adapters/`, above the facade they read; nothing imports them. The
  facade knows them only as `Observer`s (`Runtime(..., observe=[...])`).
"""

from supervisors._observers import Observer
from supervisors._policy import Decider, Directive, RestartPolicy, default_decider
from supervisors._runtime import Runtime, ShutdownSummary
from supervisors.cluster._options import RedisCluster

__all__ = [
    "Decider",
    "Directive",
    "Observer",
    "RedisCluster",
    "RestartPolicy",
    "Runtime",
    "ShutdownSummary",
    "default_decider",
]
