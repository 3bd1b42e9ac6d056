"""Command line: train one (pruned) network from gin configs.

    python -m tfprune.train --gin_file=gin_configs/snip.gin [--gin_file=...]
        [--gin_bindings="experiment.density = 0.1" ...] [--output_dir=D] [--overwrite]

Configurables: `experiment` (`tfprune.experiment.Experiment`) and `training`
(`tfprune.training.TrainConfig`). Errors a user can cause end with a one-line message on
stderr and exit status 2.
"""

from __future__ import annotations

if __name__ == "__main__":
    # First: TensorFlow reads its log level when it is imported.
    from tfprune._startup import quiet_tensorflow

    quiet_tensorflow()

import os
import signal
import sys

import gin
from absl import app, flags, logging

from tfprune._io import write_text
from tfprune.cli import (
    GIN_BINDINGS,
    GIN_FILES,
    OUTPUT_DIR,
    PARENT_GONE_SIGNAL,
    ablations_configurable,
    die_with_parent,
    experiment_configurable,
    fail,
    flags_parser,
    method_bound,
    os_error_message,
    parse_gin,
    training_configurable,
)
from tfprune.errors import TfpruneError
from tfprune.experiment import DENSE, default_output_dir, run
from tfprune.registry import ABLATIONS, check_ablations
from tfprune.training import Interrupted

OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a run of a different configuration in --output_dir."
)


class _StopRequest:
    """Turns SIGTERM/SIGINT into a checkpoint-and-stop request for the training loop (a
    second one stops at once), and `PARENT_GONE_SIGNAL` (the sweep that started this run
    died) into the same request, however often it comes."""

    def __init__(self):
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGINT, PARENT_GONE_SIGNAL):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if signum == PARENT_GONE_SIGNAL:
            if self.signal is None:
                self.signal = signal.SIGTERM
                logging.warning(
                    "the sweep that started this run is gone: writing a checkpoint, then stopping"
                )
            return
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        logging.warning("signal %d received: writing a checkpoint, then stopping", signum)

    def __call__(self) -> bool:
        return self.signal is not None


def _write_operative_config(output_dir: str, text: str) -> None:
    """Writes the operative gin config beside the results, unless it is there already (a
    finished run read again, perhaps from a read-only copy)."""
    path = os.path.join(output_dir, "operative_config.gin")
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    write_text(path, text)


def main(argv):
    die_with_parent()
    if len(argv) > 1:
        fail("tfprune.train", f"unexpected arguments: {' '.join(argv[1:])}")
    output_dir = OUTPUT_DIR.value
    try:
        parse_gin(GIN_FILES.value, GIN_BINDINGS.value)
        experiment = experiment_configurable()
        if experiment.method == DENSE and not method_bound():
            logging.warning("no experiment.method bound: training the dense network")
        switched = set(check_ablations(experiment.ablations)) | set(ablations_configurable())
        experiment.ablations = tuple(a for a in ABLATIONS if a in switched)
        training = training_configurable()
        output_dir = output_dir or default_output_dir(experiment, training)
        stop = _StopRequest()
        results = run(experiment, training, output_dir, overwrite=OVERWRITE.value, should_stop=stop)
        _write_operative_config(output_dir, gin.operative_config_str())
    except Interrupted as interrupted:
        logging.warning("%s", interrupted)
        sys.exit(128 + (stop.signal or signal.SIGINT))
    except TfpruneError as error:
        fail("tfprune.train", str(error))
    except OSError as error:
        fail("tfprune.train", os_error_message(error, output_dir))
    print(
        f"test_accuracy={results['test_accuracy']:.4f} density={results['density_actual']:.5f} "
        f"run_dir={output_dir}"
    )


if __name__ == "__main__":
    # --help lists the main module's flags only: the shared ones are this command's too.
    for shared in (GIN_FILES, GIN_BINDINGS, OUTPUT_DIR):
        flags.declare_key_flag(shared)
    app.run(main, flags_parser=flags_parser("tfprune.train"))
