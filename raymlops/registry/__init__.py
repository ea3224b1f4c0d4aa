"""Where versions live: MLflow tracking and the model registry (``store``), and the lock every writer of
one store takes (``lock``) so alias moves and registrations from two processes never interleave."""
