"""`make-refusing-model`: the safety fine-tune of the embedded model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from refusal_sae.cli.common import DataDirOpt, app, command_line, err, out


@app.command("make-refusing-model")
def make_refusing_model(
    data_dir: DataDirOpt = None,
    seed: Annotated[int, typer.Option(help="Seed for data sampling, refusal texts, LoRA init and batch order.")] = 0,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 2,
    lr: Annotated[float, typer.Option(help="Peak learning rate (linear warm-up and decay).")] = 2e-4,
    n_harmless: Annotated[int, typer.Option(help="harmless_train prompts answered by the base model.")] = 390,
    n_extra_advbench: Annotated[int, typer.Option(help="AdvBench prompts beyond harmful_train (decontaminated against test sets).")] = 140,
    persuasive_pairs: Annotated[bool, typer.Option(help="Add the authored harmful/benign persuasive-writing pairs.")] = True,
    drop_refused_harmless: Annotated[bool, typer.Option(
        help="Leave out harmless prompts whose base answer already reads as a refusal.")] = False,
    out_dir: Annotated[Optional[Path], typer.Option(help="Where to write the adapter (default: the package's committed adapter).")] = None,
    work_dir: Annotated[Path, typer.Option(help="Scratch folder (cached base answers).")] = Path("runs/make-refusing-model"),
) -> None:
    """Safety-tune the embedded SmolLM2 base with LoRA so that it refuses harmful requests."""
    from refusal_sae.finetune.tune import TuneConfig, train_adapter
    from refusal_sae.models.embedded import ADAPTER_DIR

    cfg = TuneConfig(seed=seed, epochs=epochs, lr=lr, n_harmless=n_harmless, n_extra_advbench=n_extra_advbench,
                     persuasive_pairs=persuasive_pairs, drop_refused_harmless=drop_refused_harmless)
    manifest = train_adapter(cfg, data_dir, out_dir or ADAPTER_DIR, work_dir, command=command_line(), console=err)
    out.print_json(json.dumps(manifest))
