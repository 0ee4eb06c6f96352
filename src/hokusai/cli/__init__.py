"""The ``hokusai`` command line."""
