"""The ``kerasurgery`` command.

==================  ==========================================================
`main`              entry point: parse, run, report errors (exit status)
`parser`            the arguments of every command (imports nothing heavy)
`commands`          what each command does
`files`             a user's model and data files (clear errors); checks of the files written
`point_table`       the table `kerasurgery inspect` prints
`demo`              ``kerasurgery demo``: every job on a tiny CNN
==================  ==========================================================
"""

from kerasurgery.cli.main import main

__all__ = ["main"]
