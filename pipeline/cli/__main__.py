"""`python -m pipeline.cli` is `litelora`."""

from pipeline.cli.app import main

main()
