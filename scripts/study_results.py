"""Regenerate reports/data/study_results.json: the study's published figures plus exact parameter counts.

The study's own parameter figures are not usable (its K figures are 10x too small), so the
trainable parameters of each published run are counted here, on a CodeBERT-shaped encoder (a
default `RobertaConfig()`: 12 layers, 768 hidden, 50,265 tokens, as roberta-base), with the
project's own counting. Run from the repository root:

    python scripts/study_results.py PATH/TO/study-results.json

The report reads only the output file; nothing reads the source at run time.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from transformers import RobertaConfig

from trainers import methods
from trainers.encoders import load_encoder
from records.io import write_json

OUT = Path(__file__).resolve().parents[1] / "reports" / "data" / "study_results.json"


def main(source: str) -> None:
    study = json.loads(Path(source).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        RobertaConfig().save_pretrained(tmp)
        encoder = load_encoder(tmp)
        for run in study["runs"]:
            count = methods.count_parameters(encoder, methods.get_preset(run["name"]))
            run["trainable"] = count.trainable
            run["share_of_base"] = count.trainable / count.base_parameters
    study["parameters_note"] = ("trainable and share_of_base: counted by interp (scripts/study_results.py) on a default "
                                "RobertaConfig(), the shape of CodeBERT-base; not the study's own figures")
    write_json(OUT, study)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
