"""Light imports: the package, the report, and a sweep that plans and collects load no
TensorFlow (each check runs in a fresh interpreter, where nothing has imported it yet)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import _procs

HEAVY = ("tensorflow", "keras", "tensorflow_datasets")
_CHECK = textwrap.dedent(
    """
    import sys
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
    assert not heavy, "imported " + ", ".join(heavy[:5])
    print("light")
    """
)


def _light(code: str) -> subprocess.CompletedProcess:
    """Runs `code` from the repository, then fails if a heavy module was imported."""
    script = textwrap.dedent(code) + _CHECK.format(heavy=set(HEAVY))
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=_procs.ROOT,
        env=_procs.ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_light(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "light"


def test_import_tfprune_and_its_public_names_of_the_configuration_are_light():
    _assert_light(
        _light(
            """
            import tfprune
            assert tfprune.__version__ and "Experiment" in dir(tfprune)
            from tfprune import registry, results, rundir, experiment
            from tfprune.training import TrainConfig
            """
        )
    )


def test_the_report_module_and_its_reading_are_light(tmp_path):
    csv_path = tmp_path / "results.csv"
    from tfprune.results import COLUMNS

    csv_path.write_text(
        ",".join(COLUMNS) + "\nsnip,none,0.5,0.5,0,0,,d,m,0.8,0.5,2,1.0,runs/a\n"
    )
    _assert_light(
        _light(
            f"""
            import tfprune.report as report
            rows = report.load_results({str(tmp_path)!r})
            assert [r["method"] for r in rows] == ["snip"]
            assert report.aggregate(rows)[0]["n"] == 1
            """
        )
    )


def test_a_sweep_plans_checks_and_collects_without_tensorflow(tmp_path):
    _assert_light(
        _light(
            f"""
            from tfprune import sweep
            base, switched, training = sweep.base_configuration(
                ["gin_configs/default.gin"], ["training.steps = 2"]
            )
            grid, skipped = sweep.cells(
                sweep.parse_methods("snip,erk,lottery,dense"),
                sweep.parse_densities("0.8^1:0.8^2"),
                sweep.parse_ablation_sets("none,shuffle,invert"),
                sweep.parse_seeds("0"),
                lottery_rate=base.lottery_rate,
            )
            assert len(grid) == 2 * 3 + 2 * 3 + 2 * 2 + 1, len(grid)
            sweep.check_cells(base, switched, training, grid)
            results = dict(
                method="snip", ablations=[], density_target=0.8, density_actual=0.8, seed=0,
                prune_step=0, rewind_step=None, dataset="fashion_mnist",
                model="lenet_300_100", test_accuracy=0.5, test_loss=1.0, epochs=1,
                wall_seconds=1.0,
            )
            import sys
            from tfprune.executors import base
            assert base.append_row({str(tmp_path / "results.csv")!r},
                                   base.result_row(results, "runs/x"))
            assert base.read_rows({str(tmp_path / "results.csv")!r})[0]["method"] == "snip"
            # The Ray executor, and Ray, load only when --executor=ray asks for them.
            assert not [m for m in sys.modules if m.split(".")[0] == "ray"]
            assert "tfprune.executors.ray" not in sys.modules
            """
        )
    )


def test_the_light_check_catches_what_it_would_import():
    done = _light("import tfprune.layers\n")
    assert done.returncode != 0 and "imported keras" in done.stderr
