"""`python3 -m inventory` runs the service."""

from inventory.server import main

main()
