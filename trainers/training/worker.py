"""One of the processes `distributed.launch` starts: it trains the run described in a job file.

Kept apart from `distributed.py`, which the training loop imports, because it imports the
loop and the run trainer itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainers import methods
from trainers.training.distributed import end_failed
from trainers.training.loop import TrainConfig
from trainers.training.train import RunSpec, train_run


def main(job_file: str) -> None:
    """One of the launched processes: the run described in `job_file`."""
    import torch.distributed as dist

    job = json.loads(Path(job_file).read_text())
    spec = RunSpec(**{**job["spec"], "method": methods.method_from_dict(job["spec"]["method"]), "data_dir": Path(job["spec"]["data_dir"])})
    try:
        train_run(spec, TrainConfig(**job["cfg"]), runs_dir=Path(job["runs_dir"]), device=job["device"],
                  resume=job["resume"], progress=job["progress"])
    except Exception as exc:  # the first to fail is reported by `launch`; torchrun's traceback of every process would bury it
        end_failed(exc)  # ends this process (status 1, quietly): torchrun stops the others
        raise
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
