"""Seeing inside a running runtime: metrics, tracing, an admin endpoint, a dashboard.

Each is an observer, given to the runtime (`Runtime(..., observe=[...])`,
`supervisors._observers` says when each is told what) and each needs its extra:

* `Metrics` (`inorder[metrics]`): registers a `RuntimeCollector` with
  prometheus_client when the runtime starts; each scrape reads the runtime's
  own counters on its loop thread, so nothing is counted twice and a runtime
  without it pays nothing.
* `Tracing` (`inorder[tracing]`): one OpenTelemetry span per handled message,
  in the trace of the span that was active where it was sent; the trace context
  travels with the message (the journal, the cluster's streams), so a restart
  or another node continues the trace.
* `AdminServer` (`inorder[admin]`): serves the figures, the dead letters (list,
  redeliver, purge), `/metrics` and the dashboard page over HTTP on 127.0.0.1
  from `start()` until the stop. Over any `Source` (a cluster read from Redis),
  `python -m supervisors dashboard` serves the same page.

Nothing in the runtime imports this package: it sits above it.
"""

from supervisors.observe._admin import AdminServer
from supervisors.observe._metrics import Metrics, RuntimeCollector
from supervisors.observe._runtime_source import RuntimeSource
from supervisors.observe._source import Source
from supervisors.observe._tracing import Tracing

__all__ = ["AdminServer", "Metrics", "RuntimeCollector", "RuntimeSource", "Source", "Tracing"]
