"""Everything up to a checkpoint: data, the base encoder, PEFT methods, training, evaluation."""

from trainers.methods.registration import register_with_peft as _register_with_peft

_register_with_peft()  # our peft methods register when peft is imported (peft itself is not imported here)
