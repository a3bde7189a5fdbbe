"""Helper for test_distribution.py, run as a script in a fresh process.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \
        python _distribution_worker.py jax|jax_example|cli OUT_DIR
    KERAS_BACKEND=tensorflow python _distribution_worker.py tensorflow OUT_DIR

`jax`: on two virtual CPU devices, trains each keraseq language model
(lstm, rnn, transformer) for three steps on one device and the same three
steps under `keras.distribution.DataParallel` over both devices, from the same
initial weights (copied) on the same batches, with two optimizers: SGD and the
Adam of `compile_language_model`. Writes OUT_DIR/<arch>_<optimizer>.npz (the
initial, single-device and two-device weights, the per-step losses) and
OUT_DIR/jax.json: the devices, the mesh, where the variables live and the
sharding of a training batch as seen inside the compiled train step.

`jax_example`: runs examples/data_parallel_jax.py (the README's snippet) on
the two devices; writes OUT_DIR/jax_example.json.

`cli`: runs `keraseq train --distribute` (the command line's `main`) on
the two devices, once with a batch size they cannot share and once for real.

`tensorflow`: splits the CPU into two logical devices, runs
examples/mirrored_strategy.py and writes OUT_DIR/tensorflow.json: replicas,
variable type and devices, losses, how far the weights moved.

The devices must be configured before jax / TensorFlow initialise, hence a
separate process (the test session may run any backend).
"""

import json
import os
import runpy
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
STARTED = time.time()
ARCHITECTURES = ("lstm", "rnn", "transformer")
VOCABULARY_SIZE = 13
STEPS, BATCH_SIZE, LENGTH = 3, 4, 8


def _log(what):
    """A progress line in the log (the test shows the log when a worker fails)."""
    print(f"[{time.time() - STARTED:5.1f} s] {what}", flush=True)


def _snapshot_fit(keras, record):
    """Wrap `keras.Model.fit` to keep the weights a model had before it trained."""
    fit = keras.Model.fit

    def recording_fit(self, *args, **kwargs):
        record["before"] = [w.copy() for w in self.get_weights()]
        return fit(self, *args, **kwargs)

    keras.Model.fit = recording_fit


def run_jax(out):
    import jax
    import keras
    import numpy as np

    from keraseq.models import compile_language_model, language_model

    assert keras.backend.backend() == "jax", keras.backend.backend()
    devices = keras.distribution.list_devices()
    report = {"jax_platforms": [d.platform for d in jax.devices()], "keras_devices": devices}

    seen = {}  # name -> (global shape, shard shape, number of devices), from inside jit

    class ProbedLoss(keras.losses.SparseCategoricalCrossentropy):
        """The usual loss; under `probe`, records how jit sharded y_true and y_pred."""

        probe = False

        def call(self, y_true, y_pred):
            if ProbedLoss.probe:
                for name, array in (("y_true", y_true), ("y_pred", y_pred)):
                    jax.debug.inspect_array_sharding(
                        array,
                        callback=lambda sharding, name=name, shape=array.shape: seen.__setitem__(
                            name,
                            (list(shape), list(sharding.shard_shape(shape)),
                             len(sharding.device_set)),
                        ),
                    )
            return super().call(y_true, y_pred)

    _log("jax and keraseq imported")
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCABULARY_SIZE, (STEPS, BATCH_SIZE, LENGTH)).astype("int32")
    y = rng.integers(0, VOCABULARY_SIZE, (STEPS, BATCH_SIZE, LENGTH)).astype("int32")

    def build(architecture, optimizer):
        keras.utils.set_random_seed(0)
        model = language_model(
            architecture, VOCABULARY_SIZE, units=16, embedding_dim=8, num_heads=2,
            sequence_length=LENGTH,
        )
        if optimizer == "adam":
            compile_language_model(model)  # Adam, lr 2e-3, global clipnorm 1, as the CLI
        else:
            model.compile(
                optimizer=keras.optimizers.SGD(learning_rate=0.5, global_clipnorm=1.0),
                loss=ProbedLoss(from_logits=True),
            )
        return model

    def train(model):
        return [
            float(model.train_on_batch(x[step], y[step], return_dict=True)["loss"])
            for step in range(STEPS)
        ]

    distribution = keras.distribution.DataParallel(devices=devices)
    report["mesh_shape"] = list(distribution.device_mesh.shape)
    report["mesh_devices"] = [str(d) for d in distribution.device_mesh.devices.flatten()]
    for architecture in ARCHITECTURES:
        for optimizer in ("sgd", "adam"):
            single = build(architecture, optimizer)
            initial = single.get_weights()
            single_losses = train(single)
            with distribution.scope():
                parallel = build(architecture, optimizer)
                parallel.set_weights(initial)  # the same start, copied
                ProbedLoss.probe = optimizer == "sgd" and architecture == "lstm"
                parallel_losses = train(parallel)
                ProbedLoss.probe = False
            if architecture == "lstm" and optimizer == "sgd":
                shardings = [v.value.sharding for v in parallel.weights]  # of jax.Arrays
                report["variables"] = {
                    "count": len(shardings),
                    "devices": sorted({len(sharding.device_set) for sharding in shardings}),
                    "replicated": all(sharding.is_fully_replicated for sharding in shardings),
                }
                report["batch_sharding"] = seen
            _log(f"{architecture} {optimizer}: one device and two devices trained")
            np.savez(
                out / f"{architecture}_{optimizer}.npz",
                names=np.array([v.path for v in single.weights]),
                single_losses=single_losses,
                parallel_losses=parallel_losses,
                **{f"initial_{i}": w for i, w in enumerate(initial)},
                **{f"single_{i}": w for i, w in enumerate(single.get_weights())},
                **{f"parallel_{i}": w for i, w in enumerate(parallel.get_weights())},
            )

    (out / "jax.json").write_text(json.dumps(report, indent=1))


def run_jax_example(out):
    import keras
    import numpy as np

    record = {}
    _snapshot_fit(keras, record)
    example = runpy.run_path(str(ROOT / "examples" / "data_parallel_jax.py"))
    _log("examples/data_parallel_jax.py ran")
    model = example["model"]
    report = {
        "mesh_shape": list(example["distribution"].device_mesh.shape),
        "variable_devices": len(model.trainable_variables[0].value.sharding.device_set),
        "losses": example["history"].history["loss"],
        "max_weight_change": max(
            float(np.max(np.abs(after - before)))
            for after, before in zip(model.get_weights(), record["before"])
        ),
    }
    (out / "jax_example.json").write_text(json.dumps(report, indent=1))


def run_cli(out):
    """`keraseq train --distribute` on the two devices: a batch size that does not
    split, then a tiny run. Writes OUT_DIR/cli.json (exit codes, output)."""
    import contextlib
    import io

    import keras

    from keraseq.cli import main

    def call(argv):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(argv)
        return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}

    run = out / "run"
    tiny = ["train", "--max-tokens", "3000", "--epochs", "1", "--units", "16",
            "--sequence-length", "32", "--distribute", "--out", str(run)]
    report = {
        "odd_batch": call(tiny + ["--batch-size", "7"]),
        "odd_batch_wrote": run.exists(),
        "run": call(tiny + ["--batch-size", "8"]),
        "files": sorted(path.name for path in run.iterdir()) if run.exists() else [],
        "distribution_after": repr(keras.distribution.distribution()),
    }
    (out / "cli.json").write_text(json.dumps(report, indent=1))


def run_tensorflow(out):
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # two logical CPU devices, even on a GPU machine
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras
    import numpy as np

    record = {}
    _snapshot_fit(keras, record)
    example = runpy.run_path(str(ROOT / "examples" / "mirrored_strategy.py"))
    model, strategy = example["model"], example["strategy"]
    variable = model.trainable_variables[0].value  # a MirroredVariable
    report = {
        "backend": keras.backend.backend(),
        "logical_devices": [d.name for d in tf.config.list_logical_devices("CPU")],
        "replicas": strategy.num_replicas_in_sync,
        "model_strategy": type(model.distribute_strategy).__name__,
        "variable_type": type(variable).__name__,
        "variable_devices": sorted(v.device for v in getattr(variable, "values", [variable])),
        "losses": example["history"].history["loss"],
        "max_weight_change": max(
            float(np.max(np.abs(after - before)))
            for after, before in zip(model.get_weights(), record["before"])
        ),
    }
    (out / "tensorflow.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    {"jax": run_jax, "jax_example": run_jax_example, "cli": run_cli,
     "tensorflow": run_tensorflow}[mode](out)
