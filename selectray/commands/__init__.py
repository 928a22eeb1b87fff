"""The `selectray` subcommands, one module each: `NAME`, `HELP`, `add_arguments(parser)`, `main(args)`.

`selectray.cli.COMMANDS` lists them in the order `--help` shows them. A command module
imports only what its arguments need at the top; the work's imports go inside `main`.
"""
