"""Small helpers shared by the test files."""

BACKENDS = ("tensorflow", "jax", "torch")
