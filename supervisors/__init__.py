"""inorder supervisors: restart policies, the supervisor actor and the `Runtime` facade."""

from supervisors._cluster import RedisCluster
from supervisors._policy import Decider, Directive, RestartPolicy, default_decider
from supervisors._runtime import Runtime, ShutdownSummary

__all__ = [
    "Decider",
    "Directive",
    "RedisCluster",
    "RestartPolicy",
    "Runtime",
    "ShutdownSummary",
    "default_decider",
]
