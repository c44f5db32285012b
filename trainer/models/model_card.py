"""The model card (README.md) of a fine-tuned Hugging Face checkpoint: its base model and lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODEL_CARD_FILE = "README.md"


RELATIONS = {"finetune": "Fine-tune", "adapter": "LoRA adapter", "merge": "Merged LoRA fine-tune"}


def write_model_card(
    directory: Path,
    lineage: dict[str, Any],
    relation: str | None = "finetune",
    library: str = "transformers",
    beside_state: bool = True,
) -> None:
    """README.md whose metadata names the base model and how this one relates to it
    (``finetune``, ``adapter`` or ``merge``; None: it is that model, exported as it was
    imported), as the Hugging Face Hub expects. ``beside_state``: a checkpoint's card, with
    trainer_state.json beside it (an export has none)."""
    from huggingface_hub import ModelCard, ModelCardData

    model_id = lineage.get("model_id")
    data = ModelCardData(
        library_name=library,
        tags=[
            "lmrunner",
            *(["fine-tuned"] if relation else []),
            *(["lora"] if relation in ("adapter", "merge") else []),
        ],
        # Only a real Hub repo id may stand here; a model imported from a local folder has none.
        base_model=model_id,
        base_model_relation=relation if model_id else None,
    )
    chain = " -> ".join(lineage.get("chain") or []) or "-"
    if relation is None:
        text = f"---\n{data.to_yaml()}\n---\n\n# {model_id or chain}\n\nExported by lmrunner as it was imported.\n"
        ModelCard(text).save(directory / MODEL_CARD_FILE)
        return
    text = (
        f"---\n{data.to_yaml()}\n---\n\n"
        f"# {RELATIONS[relation]} of {lineage.get('fine_tuned_from')}\n\n"
        f"Fine-tuned with lmrunner from the registry model `{lineage.get('fine_tuned_from')}`"
        f" ({model_id or 'imported from a local directory'}).\n\n"
        f"- lineage: {chain}\n"
        f"- fine-tune started: {lineage.get('fine_tune_started_at')}\n"
        f"- architecture: {lineage.get('architecture_type')}\n"
    )
    if beside_state:
        text += "\ntrainer_state.json beside this file holds the step, the full training config and the run id.\n"
    ModelCard(text).save(directory / MODEL_CARD_FILE)
