"""Script calls in one round trip, by digest, loaded again when the server lost them.

redis-py's pipeline runs `SCRIPT EXISTS` before every execution that holds a script:
a second round trip for each of the node's sends, reads and commits. Here the calls
go out as plain `EVALSHA`s; the server answers `NOSCRIPT` only for a call it did not
run (it restarted, or its scripts were flushed), so exactly those are run again once
the script is loaded.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Call", "evalsha_all"]

#: One script call: the script (redis-py's registered `AsyncScript`), its keys, its args.
Call = tuple[Any, list[Any], list[Any]]

_TRIES = 3  # a server that forgets the scripts again at once is not one to retry against


async def evalsha_all(client: Any, calls: list[Call]) -> list[Any]:
    """The answers of `calls`, pipelined, in order; a call's error (a `FENCED`) is its
    answer, an exception instance. A lost connection raises (redis-py's errors)."""
    from redis.exceptions import NoScriptError

    answers: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for _ in range(_TRIES):
        async with client.pipeline(transaction=False) as pipe:
            for i in todo:
                script, keys, args = calls[i]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        missing = []
        for i, result in zip(todo, results, strict=True):
            if isinstance(result, NoScriptError):
                missing.append(i)
            else:
                answers[i] = result
        if not missing:
            return answers
        scripts = {id(calls[i][0]): calls[i][0] for i in missing}
        for script in scripts.values():
            script.sha = await client.script_load(script.script)
        todo = missing
    msg = "the Redis server keeps losing the cluster's scripts (SCRIPT FLUSH?)"
    raise RuntimeError(msg)
