#!/usr/bin/env bash
# Run the whole test suite once per Keras backend: tensorflow, jax, torch.
# Extra arguments go to pytest (e.g. `bash tests/all_backends.sh -m "not slow"`).
# Exit code: 0 when every backend passed; pytest's exit code 5 (no tests collected) is a failure.
export TF_CPP_MIN_LOG_LEVEL=2
status=0
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider "$@"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "=== pytest failed under $backend (exit code $rc; 5 = no tests collected)"
    status=1
  fi
done
exit $status
