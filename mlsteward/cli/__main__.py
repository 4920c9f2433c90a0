"""``python -m mlsteward.cli``: the same commands as the ``mlsteward`` script."""

from mlsteward.cli.app import main

main()
