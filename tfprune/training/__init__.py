"""Training (SPEC §5): the optimizer, a resumable distributed loop, its callbacks, checkpoints.

- `optim`: `SGD` (PyTorch's update rule) and `PiecewiseSchedule`.
- `config`: `TrainConfig` and `TrainState` (no TensorFlow needed).
- `loop`: `Trainer`, the loop; it calls the hooks of its callbacks.
- `callbacks`: `Callback`, `MaskUpdate` (pruning during training) and the loop's own
  callbacks: evaluation, progress, TensorBoard, snapshots, checkpoints.
- `schedules`: `CubicSchedule` and `DropSchedule`, when the masks of pruning during training
  change (no TensorFlow needed).
- `sparse`: their mask updates: `GradualMagnitude` (gmp), `DropAndGrow` with
  `SparseEvolutionary` (SET) and `RigL`.
- `checkpoint`: checkpoints and snapshots, restored by variable path.
- `distribute`: what the workers of a strategy agree on.
- `progress`: the progress display and its plain line.

Names are imported on first use (PEP 562): `from tfprune.training import TrainConfig` imports
neither TensorFlow nor Keras.
"""

import importlib

# Public name -> the module of this package that defines it.
_ORIGINS = {
    **dict.fromkeys(("TrainConfig", "TrainState"), "config"),
    **dict.fromkeys(("SGD", "PiecewiseSchedule"), "optim"),
    **dict.fromkeys(("Interrupted", "Trainer", "enable_determinism"), "loop"),
    **dict.fromkeys(("Callback", "MaskUpdate"), "callbacks"),
    **dict.fromkeys(("CubicSchedule", "DropSchedule"), "schedules"),
    **dict.fromkeys(("DropAndGrow", "GradualMagnitude", "RigL", "SparseEvolutionary"), "sparse"),
    **dict.fromkeys(
        ("CHECKPOINT_PREFIX", "checkpoints", "load_snapshot", "save_snapshot"), "checkpoint"
    ),
    **dict.fromkeys(("copy_first_replica", "worker_role"), "distribute"),
    **dict.fromkeys(
        (
            "PLAIN_PROGRESS_SECONDS",
            "ProgressDisplay",
            "format_progress_line",
            "parse_progress_line",
        ),
        "progress",
    ),
}

__all__ = list(_ORIGINS)


def __getattr__(name: str):
    origin = _ORIGINS.get(name)
    if origin is None:
        raise AttributeError(f"module 'tfprune.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{origin}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ORIGINS})
