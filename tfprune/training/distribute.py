"""What the workers and replicas of a `tf.distribute` strategy agree on while training.

The role of this process (chief or not), one value for every replica of a variable, the
agreement to stop (any worker asking stops them all), the check that every worker resumed
from the same iteration, and the sharding that gives each worker its part of every global
batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfprune.errors import TrainingError


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """`(is_chief, number of workers)` of this process in `strategy`'s cluster.

    The chief is the task of type "chief" if the cluster has one, else worker 0 (as in
    `TF_CONFIG`); a strategy without a cluster runs on one worker, the chief.

    Example:

    >>> worker_role(tf.distribute.get_strategy())
    (True, 1)
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True, 1
    jobs = resolver.cluster_spec().as_dict()
    workers = sum(len(resolver.cluster_spec().task_indices(job)) for job in jobs)
    task_type, task_id = resolver.task_type, resolver.task_id
    chief = task_type in (None, "chief") or (
        task_type == "worker" and task_id == 0 and "chief" not in jobs
    )
    return chief, workers


def copy_first_replica(strategy: tf.distribute.Strategy, variables: Sequence) -> None:
    """Gives every replica of `variables` the value the first replica holds.

    The replicas of a variable written in cross-replica context hold one value already; with
    several workers, each computed its own, and the chief's (its first replica's) is kept.

    Example:

    >>> copy_first_replica(strategy, model.non_trainable_variables)  # BN statistics
    """
    variables = list(variables)

    @tf.function
    def first_values():
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        values = [tf.convert_to_tensor(v.value) for v in variables]
        kept = [tf.where(first, value, tf.zeros_like(value)) for value in values]
        return context.all_reduce(tf.distribute.ReduceOp.SUM, kept)

    results = strategy.run(first_values)
    for variable, value in zip(variables, results, strict=True):
        variable.assign(strategy.experimental_local_results(value)[0])


class StopAgreement:
    """Whether any worker asks to stop: with several workers, all stop together.

    Args:
        strategy: The strategy the workers train in.
        num_workers: How many workers it has (`worker_role`).

    Example:

    >>> agree = StopAgreement(strategy, num_workers=1)
    >>> agree(False)
    False
    """

    def __init__(self, strategy: tf.distribute.Strategy, num_workers: int):
        self.strategy = strategy
        self.num_workers = num_workers
        self._any_worker = None

    def __call__(self, stop: bool) -> bool:
        """True when `stop` is True on this worker or on any other (a collective call: every
        worker must make it at the same point)."""
        if self.num_workers == 1:
            return stop
        if self._any_worker is None:

            @tf.function
            def any_worker(flag):
                context = tf.distribute.get_replica_context()
                # An input placeholder has no device, and a collective needs one: copy the flag
                # under the replica's device scope.
                return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(flag))

            self._any_worker = any_worker
        total = self.strategy.run(self._any_worker, args=(tf.constant(float(stop)),))
        return float(self.strategy.experimental_local_results(total)[0]) > 0


def check_same_step(strategy: tf.distribute.Strategy, step: int) -> None:
    """Raises TrainingError unless every worker restored the same iteration.

    Raises:
        TrainingError: naming this worker's iteration, when the workers disagree.
    """

    @tf.function
    def moments():
        context = tf.distribute.get_replica_context()
        value = tf.constant(float(step), tf.float64)
        return context.all_reduce(
            tf.distribute.ReduceOp.SUM, [tf.ones_like(value), value, value * value]
        )

    results = strategy.run(moments)
    n, total, squares = (float(strategy.experimental_local_results(r)[0]) for r in results)
    # Equal values are the only ones with n * sum(s^2) == (sum(s))^2.
    if n * squares != total * total:
        raise TrainingError(
            f"the workers resumed from different iterations (this one from {step}): put "
            "the output directory on a filesystem every worker sees"
        )


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Splits each global batch between the workers (every worker reads the same batches),
    so that a multi-worker run sees the data in the order of a single-worker run."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
