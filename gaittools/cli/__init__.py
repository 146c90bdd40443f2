"""The command line: the `gaittools` group, its one-line errors, progress reports and the subcommands.
May import every room below it.
"""
