"""``python -m benchbench``: the ``benchbench`` command, for launchers that start a module
(``torchrun --nproc_per_node N -m benchbench cell CONFIG CELL``)."""
from benchbench.cli import app

app(prog_name="benchbench")
