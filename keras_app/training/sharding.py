"""How the workers of `--strategy multiworker` share TFRecord shards: each its own files
(tf.data's FILE sharding), where the steps of an epoch can be counted, else every worker
every shard."""

from __future__ import annotations


def worker_count(strategy) -> int:
    """How many processes train together (the chief and the workers of TF_CONFIG)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, sum(len(spec.get(kind, [])) for kind in ("chief", "worker")))


def shard_by_file(split, steps_per_epoch: int | None, workers: int) -> tuple[bool, str]:
    """Whether each worker can read only its own TFRecord shards of `split`, and the line
    that says which way it reads.

    By file, workers' shares differ by up to one shard, so an epoch cannot be "the data
    once" (the collectives need the same number of steps everywhere): the split repeats
    and `--steps-per-epoch` counts the steps. Without it, or with fewer shards than
    workers, every worker reads every shard and keeps its share of each batch.
    """
    if split.records is None or workers < 2:
        return False, ""
    shards = len(split.records.shards_holding(split.record_ids))
    if steps_per_epoch is None:
        return False, (
            f"multiworker: every worker reads all {shards} train shard(s) and keeps its share "
            "of each batch (give --steps-per-epoch to split the shards among the workers)"
        )
    if shards < workers:
        return False, (
            f"multiworker: {shards} train shard(s) for {workers} workers: every worker reads "
            "them all and keeps its share of each batch (write more shards to split them)"
        )
    return True, (
        f"multiworker: each worker reads its own share of the {shards} train shards "
        f"({workers} workers; tf.data FILE sharding, {steps_per_epoch} steps an epoch)"
    )
