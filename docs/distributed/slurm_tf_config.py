"""Sets TF_CONFIG from the Slurm allocation, then runs the given command (one task per node).

srun python docs/distributed/slurm_tf_config.py python -m keras_app.train ...
"""

from __future__ import annotations

import json
import os
import sys

import tensorflow as tf


def tf_config(port: int = 12345) -> dict:
    """TF_CONFIG for this Slurm task: every task a worker, task 0 the chief."""
    resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(port_base=port)
    return {
        "cluster": resolver.cluster_spec().as_dict(),
        "task": {"type": resolver.task_type, "index": resolver.task_id},
    }


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: slurm_tf_config.py COMMAND [ARGS...]")
    os.environ["TF_CONFIG"] = json.dumps(tf_config())
    os.execvp(sys.argv[1], sys.argv[1:])
