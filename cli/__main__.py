"""``python -m regkit.cli ...`` (also what ``torchrun -m regkit.cli`` runs)."""
from regkit.cli.main import main

main()
