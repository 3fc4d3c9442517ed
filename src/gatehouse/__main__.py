"""`python -m gatehouse` is the `gatehouse` command."""

from gatehouse.entry import main

main()
