"""``python -m selflengthen.training``: the ``selflengthen train`` command, for torchrun and TrainJobs."""

import typer

from selflengthen.cli.train_cmd import train_command

app = typer.Typer(add_completion=False)
app.command()(train_command)

if __name__ == "__main__":
    app()
