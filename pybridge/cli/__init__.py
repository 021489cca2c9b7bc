"""The ``pybridge`` command line: one module per subcommand, registered in :mod:`pybridge.cli.main`."""
