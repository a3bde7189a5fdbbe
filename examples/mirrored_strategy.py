"""Data-parallel training of a keraseq language model under TensorFlow.

Keras 3.15's distribution API (`keras.distribution.DataParallel`) splits
batches under JAX only: under TensorFlow it leaves every variable and every
batch on the first device. TensorFlow's own engine for this is
`tf.distribute.MirroredStrategy`: build and compile the model inside its
scope and `model.fit` runs one replica per device, splits each batch across
them and sums their gradients (an all-reduce) before the shared update. The
code below is quoted verbatim in the README ("Scaling out"), and
tests/test_distribution.py runs it on two logical CPU devices.

Run:

    KERAS_BACKEND=tensorflow python examples/mirrored_strategy.py
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"  # set before Keras is imported

import tensorflow as tf
from keraseq.models import compile_language_model, language_model
from keraseq.text import LanguageModelDataset, Vocabulary, load_corpus, split

text = load_corpus("shakespeare")[:20_000]
vocabulary = Vocabulary.from_text(text)
train_ids, _ = split(vocabulary.encode(text))

strategy = tf.distribute.MirroredStrategy()  # every local GPU, else the CPU
print(f"replicas: {strategy.num_replicas_in_sync}")
with strategy.scope():  # variables and optimizer state: one mirrored copy per replica
    model = language_model("lstm", vocabulary.size, units=64)
    compile_language_model(model)
# fit splits each batch across the replicas: keep it a multiple of their count
batch_size = 16 * strategy.num_replicas_in_sync
train = LanguageModelDataset(train_ids, sequence_length=64, batch_size=batch_size)
history = model.fit(train, epochs=1, shuffle=False)
