"""`selflengthen tiny-model`: build the tiny CPU model folder offline."""

from __future__ import annotations

from pathlib import Path

import typer

from selflengthen.cli.common import handle_errors


@handle_errors
def tiny_model(
    output: Path = typer.Option(..., "--output", "-o", help="folder to create (must not exist or be empty)"),
    seed: int = typer.Option(0, "--seed", help="seed of the corpus, the initial weights and the batches"),
    steps: int = typer.Option(
        None, "--steps", min=0, help="pre-training steps (default: the config's model.tiny_pretrain_steps default); 0: untrained"
    ),
    log_every: int = typer.Option(50, "--log-every", min=0, help="print the loss every N steps; 0: quiet"),
) -> None:
    """Build a ~5M-parameter Qwen2 model and its tokenizer, pre-trained on the project's own corpus."""
    from selflengthen.tiny_model import build_tiny_model

    stats = build_tiny_model(str(output), seed=seed, pretrain_steps=steps, log_every=log_every)
    typer.echo(
        f"{output}: {stats['parameters']:,} parameters, vocabulary {stats['vocab_size']}, "
        f"{stats['pretrain_steps']} steps ({stats['tokens_seen']:,} tokens, final loss {stats['final_loss']}), "
        f"{stats['seconds']} s"
    )


def register(app: typer.Typer) -> None:
    app.command("tiny-model")(tiny_model)
