"""The model card (README.md) of a fine-tuned Hugging Face checkpoint: its base model and lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODEL_CARD_FILE = "README.md"


def write_model_card(directory: Path, lineage: dict[str, Any]) -> None:
    """README.md whose metadata names the base model, as the Hugging Face Hub expects."""
    from huggingface_hub import ModelCard, ModelCardData

    model_id = lineage.get("model_id")
    data = ModelCardData(
        library_name="transformers",
        tags=["lmrunner", "fine-tuned"],
        # Only a real Hub repo id may stand here; a model imported from a local folder has none.
        base_model=model_id,
        base_model_relation="finetune" if model_id else None,
    )
    chain = " -> ".join(lineage.get("chain") or []) or "-"
    text = (
        f"---\n{data.to_yaml()}\n---\n\n"
        f"# Fine-tune of {lineage.get('fine_tuned_from')}\n\n"
        f"Fine-tuned with lmrunner from the registry model `{lineage.get('fine_tuned_from')}`"
        f" ({model_id or 'imported from a local directory'}).\n\n"
        f"- lineage: {chain}\n"
        f"- fine-tune started: {lineage.get('fine_tune_started_at')}\n"
        f"- architecture: {lineage.get('architecture_type')}\n\n"
        "trainer_state.json beside this file holds the step, the full training config and the run id.\n"
    )
    ModelCard(text).save(directory / MODEL_CARD_FILE)
