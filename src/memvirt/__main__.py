"""``python -m memvirt`` runs the ``memvirt`` command."""

from memvirt.cli import main

main()
