"""`python -m raymlops`: the CLI, for Ray job entrypoints that must use the cluster's own Python."""

from raymlops.cli import main

main()
