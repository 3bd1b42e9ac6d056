"""Executors of a sweep: how its cells get run, each a `tfprune.train` process.

- `base.py`: what every executor shares: a cell's command (`CellJob`), its `results.csv` row,
  the cells finished already, and the lines that report each cell (`Executor`).
- `monitor.py`: the status lines naming the running cells and their progress.
- `local.py`: `LocalExecutor`, subprocesses on this machine, `--jobs` at a time.
- `ray.py`: `RayExecutor`, each cell a Ray task on a cluster, retried when it fails or its node
  dies; it imports `ray` when it runs, so that the sweep stays light without it.
"""
