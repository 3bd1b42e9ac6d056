"""The results of a run, in one schema: `results.json` of a run directory and the row of a
sweep's `results.csv` that summarises it.

`RunSummary` is the row: its fields are the CSV columns, in order, and `from_results` says
which `results.json` field feeds each. The runner checks what it writes against it, the sweep
collects rows with it, and the report reads them with it. `FINISHED_KEYS` are what every
finished run's `results.json` holds, shared runs included.

A line of `results.csv` can be damaged by what happens to files (a disk that filled, a copy cut
short, bytes garbled on the way): it may not be text, may have too few fields, or may hold a
value that is not a number. `read_table` reads the file line by line and names every damaged
line instead of reading it as data (`csv.DictReader` pads a short row with None). Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import csv
import dataclasses

from tfprune import registry


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """One finished run, as a row of `results.csv`.

    Attributes:
        method: The run's label (`tfprune.registry.label`): the method, or for random
            pruning with another allocation the allocation (`erk`, `uniform`,
            `ratio_of:snip`), or `snip (erk)`.
        ablations: `"none"` or the ablations joined by `+`.
        density_target: The density asked for.
        density_actual: The fraction of prunable weights kept.
        seed: The run's seed.
        prune_step: The iteration at which it was pruned (T for the after-training methods).
        rewind_step: The rewind iteration of the after-training methods, else None.
        dataset: The dataset.
        model: The network.
        test_accuracy: Final test accuracy (a fraction).
        test_loss: Final test loss.
        epochs: Epochs trained.
        wall_seconds: Training time.
        run_dir: The run directory, relative to the sweep directory.
    """

    method: str
    ablations: str
    density_target: float
    density_actual: float | None
    seed: int
    prune_step: int | None
    rewind_step: int | None
    dataset: str
    model: str
    test_accuracy: float
    test_loss: float | None
    epochs: int | None
    wall_seconds: float | None
    run_dir: str

    @classmethod
    def from_results(cls, results: dict, run_dir: str) -> RunSummary:
        """The summary of a run from its `results.json`.

        Raises:
            KeyError: naming a field the results lack.
        """
        return cls(
            method=registry.label(results["method"], results.get("allocation", registry.GLOBAL)),
            ablations="+".join(results.get("ablations", [])) or "none",
            density_target=results["density_target"],
            density_actual=results["density_actual"],
            seed=results["seed"],
            prune_step=results.get("prune_step"),
            rewind_step=results.get("rewind_step"),
            dataset=results["dataset"],
            model=results["model"],
            test_accuracy=results["test_accuracy"],
            test_loss=results["test_loss"],
            epochs=results["epochs"],
            wall_seconds=results["wall_seconds"],
            run_dir=run_dir,
        )

    def to_row(self) -> dict[str, object]:
        """`{column: value}` for `csv.DictWriter` (None as an empty cell)."""
        return {k: "" if v is None else v for k, v in dataclasses.asdict(self).items()}


# The columns of results.csv, one row per finished run.
COLUMNS = tuple(field.name for field in dataclasses.fields(RunSummary))
FLOATS = ("density_target", "density_actual", "test_accuracy", "test_loss", "wall_seconds")
INTS = ("seed", "prune_step", "rewind_step", "epochs")
# Columns that every row must fill; the others may be empty (read as None).
REQUIRED = ("method", "ablations", "density_target", "seed", "dataset", "model", "test_accuracy")
# What every finished run's results.json holds (`tfprune.runner.finish` writes them all).
FINISHED_KEYS = (
    "test_accuracy",
    "test_loss",
    "density_actual",
    "epochs",
    "wall_seconds",
    "history",
)


class TableError(ValueError):
    """The file cannot be read as a results table at all (no header, a missing column)."""


def parse_row(header: list[str], record: list[str]) -> dict:
    """Converts one CSV record: the numeric columns to float or int, empty optional cells to None.

    Raises:
        ValueError: saying what is wrong with the record (field count, empty required cell,
            a value that is not a number, a density outside (0, 1]).
    """
    if len(record) != len(header):
        raise ValueError(f"it has {len(record)} fields, the header {len(header)}")
    row = {name: value.strip() for name, value in zip(header, record, strict=True)}
    for name in REQUIRED:
        if not row[name]:
            raise ValueError(f"column {name!r} is empty")
    for name in FLOATS + INTS:
        value = row[name]
        if not value:
            row[name] = None
            continue
        try:
            row[name] = float(value) if name in FLOATS else int(value)
        except ValueError:
            kind = "a number" if name in FLOATS else "an integer"
            raise ValueError(f"column {name!r} is {value!r}, not {kind}") from None
    if not 0.0 < row["density_target"] <= 1.0:
        raise ValueError(f"density_target {row['density_target']} is not in (0, 1]")
    return row


def read_table(path: str) -> tuple[list[tuple[int, dict]], list[tuple[int, str]]]:
    """Reads `results.csv` line by line.

    Args:
        path: The file.

    Returns:
        `(rows, damaged)`: `rows` are `(line number, {column: text})` of the intact rows, in
        file order; `damaged` are `(line number, reason)` of the lines that are not.

    Raises:
        OSError: if the file cannot be read.
        TableError: if the file has no header line naming every column.
    """
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    header, rows, damaged = None, [], []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            (record,) = csv.reader([raw.decode("utf-8").rstrip("\r")])
        except UnicodeDecodeError:
            damaged.append((number, "not UTF-8 text"))
            continue
        except (csv.Error, ValueError) as error:
            damaged.append((number, f"not a CSV line: {error}"))
            continue
        if header is None:
            header = [c.strip() for c in record]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise TableError(f"line {number} lacks the column(s) {', '.join(missing)}")
            continue
        try:
            parse_row(header, record)
        except ValueError as error:
            damaged.append((number, str(error)))
            continue
        rows.append((number, dict(zip(header, (c.strip() for c in record), strict=True))))
    if header is None:
        raise TableError("it has no header line")
    return rows, damaged


def describe(damaged: list[tuple[int, str]]) -> str:
    """`line 3 (not UTF-8 text), line 7 (it has 5 fields, the header 14)`, at most five."""
    shown = ", ".join(f"line {number} ({reason})" for number, reason in damaged[:5])
    return shown + (f" and {len(damaged) - 5} more" if len(damaged) > 5 else "")
