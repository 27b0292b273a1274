"""``python -m dpsynth``: the same command line as the ``dpsynth`` script."""

from dpsynth.cli import main

main(prog_name="dpsynth")
