"""Data-parallel training of a keraseq language model on every local device (JAX).

Keras's own distribution API: `keras.distribution.DataParallel` replicates
every variable on each device, splits each batch along the batch axis into one
equal share per device and sums the gradients across devices before the one
optimizer step all replicas apply. Same model code, same `model.fit`. The code
below is quoted verbatim in the README ("Scaling out"), and
tests/test_distribution.py runs it on two virtual CPU devices.

Run (JAX only; Keras 3.15's distribution API does nothing under TensorFlow and
does not exist under torch, see examples/mirrored_strategy.py for TensorFlow):

    KERAS_BACKEND=jax python examples/data_parallel_jax.py
    # no GPU? try it on two virtual CPU devices:
    XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \
        python examples/data_parallel_jax.py

The command line does the same with `keraseq train --distribute`.
"""

import os

os.environ["KERAS_BACKEND"] = "jax"  # set before Keras is imported

import keras
from keraseq.models import compile_language_model, language_model
from keraseq.text import LanguageModelDataset, Vocabulary, load_corpus, split

text = load_corpus("shakespeare")[:20_000]
vocabulary = Vocabulary.from_text(text)
train_ids, _ = split(vocabulary.encode(text))

devices = keras.distribution.list_devices()  # every local GPU/TPU, else the CPU devices
distribution = keras.distribution.DataParallel(devices=devices)
print(f"devices: {devices}")
with distribution.scope():  # variables replicated on every device, batches split
    model = language_model("lstm", vocabulary.size, units=64)
    compile_language_model(model)
    # each batch is split across the devices: keep it a multiple of their count
    batch_size = 16 * len(devices)
    train = LanguageModelDataset(train_ids, sequence_length=64, batch_size=batch_size)
    history = model.fit(train, epochs=1, shuffle=False)
