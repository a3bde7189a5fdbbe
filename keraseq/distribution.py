"""Data parallelism for `keraseq train --distribute`, on Keras's own distribution API.

keraseq adds no distribution machinery of its own: `--distribute` builds a
`keras.distribution.DataParallel` over every device
`keras.distribution.list_devices()` returns (the GPUs or TPUs when there are
any, else the CPU devices), builds and trains the model under it, and turns it
off again before the kept checkpoint is evaluated and sampled (sampling feeds
one sequence at a time, which cannot be split across devices).

Under `DataParallel` every variable is replicated on each device, each batch
of `batch_size` sequences is split along the batch axis into equal shares of
`batch_size / num_devices`, and the gradients are summed across devices (an
all-reduce) before the one optimizer step every replica applies. The result
is the same training step as on one device, up to float rounding: the sum is
taken in a different order.

What Keras 3.15 supports (measured here): the distribution API is implemented
for JAX only. Under TensorFlow, `keras.distribution.list_devices()` and
`DataParallel` exist, but training under it leaves every variable and every
batch on the first device (nothing is split: one device does all the work);
TensorFlow users scale with `tf.distribute.MirroredStrategy` instead (README,
"Scaling out"). Under torch, the backend has no distribution module at all.
So `--distribute` needs `KERAS_BACKEND=jax` and refuses the other two.

The messages are worded for the command line (they name `--distribute` and
`--batch-size`); in your own code, use `keras.distribution` directly.
"""

from keraseq._keras import import_keras

import_keras()

import keras  # noqa: E402

from keraseq._validation import check_positive_int  # noqa: E402


def data_parallel(batch_size):
    """A `keras.distribution.DataParallel` over all local devices (`keraseq train --distribute`).

    Each training step splits a batch `x` of shape `(batch_size,
    sequence_length)` into `num_devices` shares of `(batch_size / num_devices,
    sequence_length)`, one per device; the gradients are summed across the
    devices and every replica applies the same update.

    Args:
        batch_size: positive int, the sequences per batch (`--batch-size`); it
            must be divisible by the number of devices.

    Returns:
        A `keras.distribution.DataParallel` whose 1-D device mesh (axis
        `"batch"`) holds every device of `keras.distribution.list_devices()`.
        One device is fine: the mesh then has shape `(1,)`.

    Raises:
        ValueError: the backend is not JAX (one line naming the backend and
            pointing TensorFlow users to `tf.distribute.MirroredStrategy`), or
            `batch_size` is not divisible by the number of devices (naming
            `--batch-size`, its value and the device count).

    Example:

    ```python
    # KERAS_BACKEND=jax
    distribution = data_parallel(batch_size=64)
    with distribution.scope():
        model = language_model("lstm", vocabulary_size=65)
        compile_language_model(model)
        model.fit(train_data, epochs=3)
    ```
    """
    batch_size = check_positive_int("batch_size", batch_size)
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            f"--distribute needs the jax backend (KERAS_BACKEND=jax); the backend is {backend}: "
            f"Keras {keras.__version__}'s distribution API splits batches across devices under "
            "JAX only (under tensorflow it keeps everything on one device, under torch it does "
            "not exist); TensorFlow users: tf.distribute.MirroredStrategy, see the README's "
            "\"Scaling out\""
        )
    devices = keras.distribution.list_devices()
    if batch_size % len(devices):
        raise ValueError(
            f"--batch-size {batch_size} is not divisible by the {len(devices)} devices "
            f"--distribute uses ({', '.join(devices)}): every device takes an equal share of "
            f"each batch; use a multiple of {len(devices)}"
        )
    return keras.distribution.DataParallel(devices=devices)


def describe(distribution, batch_size):
    """One line for the command line: how many devices, which, and the share of each."""
    devices = [str(device) for device in distribution.device_mesh.devices.flatten()]
    count = len(devices)
    return (
        f"--distribute: keras.distribution.DataParallel over {count} "
        f"device{'s' if count != 1 else ''} ({', '.join(devices)}), "
        f"{batch_size // count} of the {batch_size} sequences of each batch per device"
    )
