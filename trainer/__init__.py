"""The trainer of the interaction model: from micro-turn shards to checkpoints.

``data`` and ``shard_reader`` load WebDataset shards into batches (``batch``: the interleaved
200 ms sequence); ``model`` (``embed``, ``transformer``, ``heads``) is the early-fusion model
with dense and DeepSpeed MoE blocks, configured by ``config`` and ``train_config``; ``engine``,
``loop`` and ``checkpoint`` train, log and resume; ``evaluate`` reports held-out loss per head.
``microturn train`` (``run``) is the command line. By DESIGN.md's layering it depends on
``microturn.schemas`` and ``microturn.kernels`` (the MoE decode kernels), not on the pipelines.
"""
