"""``python -m tollkeep`` is the ``tollkeep`` command."""

from tollkeep.cli.main import app

app(prog_name="tollkeep")
