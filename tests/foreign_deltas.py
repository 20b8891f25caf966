"""Foreign deltas as users have them, for the tests: trained with plain peft, or fully fine-tuned and saved."""

from __future__ import annotations

from pathlib import Path

import torch

FOREIGN_MAX_LEN = 32  # tokens per query or code the foreign deltas are trained and scored at


def foreign_steps(model, tokenizer, examples, params) -> None:
    """Three steps of in-batch InfoNCE on the pairs `examples` at a high learning rate: a delta far from zero."""
    optimizer = torch.optim.AdamW(params, lr=5e-2)
    q = tokenizer([e.query for e in examples], truncation=True, max_length=FOREIGN_MAX_LEN, padding=True, return_tensors="pt")
    c = tokenizer([e.code_text for e in examples], truncation=True, max_length=FOREIGN_MAX_LEN, padding=True, return_tensors="pt")
    model.train()
    for _ in range(3):
        scores = model(**q).last_hidden_state[:, 0] @ model(**c).last_hidden_state[:, 0].T  # (batch, batch)
        torch.nn.functional.cross_entropy(scores, torch.arange(len(examples))).backward()
        optimizer.step()
        optimizer.zero_grad()


def make_foreign_deltas(root: Path, data_dir: Path, base: Path) -> dict[str, Path]:
    """root/adapters/{lora,ia3,full}: a LoRA (r 4 on query, value) and an (IA)3 adapter made with plain peft, and a fully
    fine-tuned copy of `base` saved with `save_pretrained`, each three steps on `data_dir`'s first eight train pairs."""
    import peft
    from transformers import AutoModel, AutoTokenizer

    from trainers.data import load_split

    tokenizer = AutoTokenizer.from_pretrained(base)
    pairs = load_split(data_dir, "train")[:8]
    made = {}
    for kind, config in (("lora", peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])), ("ia3", peft.IA3Config())):
        torch.manual_seed(0)
        model = peft.get_peft_model(AutoModel.from_pretrained(base), config)
        foreign_steps(model, tokenizer, pairs, [p for p in model.parameters() if p.requires_grad])
        model.save_pretrained(root / "adapters" / kind)
        made[kind] = root / "adapters" / kind
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(base)
    foreign_steps(model, tokenizer, pairs, list(model.parameters()))
    model.save_pretrained(root / "adapters" / "full")
    made["full"] = root / "adapters" / "full"
    return made
