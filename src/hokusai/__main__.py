"""`python -m hokusai` is the `hokusai` command."""

from hokusai.cli.main import main

main()
