"""``python -m lossatlas.cli`` and ``torchrun -m lossatlas.cli``: the command line."""

from . import main

main()
