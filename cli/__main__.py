"""`python -m cli`: the `mtmusicldm` command."""
from cli import main

main()
