"""Scale-out on a Ray cluster (``--ray``): one job in shards, with one limiter, budget and output.

Nothing here is imported unless a job asks for Ray: ``batchrun.runner.runner_for`` imports
``batchrun.ray.driver`` only for a config with ``ray_address``, so the core's start-up is unchanged.

- ``sharding``: which shard an id belongs to (a fixed hash, recorded in the manifest).
- ``coordinator``: the one actor that grants rate, concurrency and budget to every shard.
- ``shard``: an actor running the single-process engine on its own event loop.
- ``driver``: reads the input once, routes lines to shards, and is the one writer of the output.
- ``cluster``: joining (or starting) the cluster.
"""
