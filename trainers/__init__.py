"""Everything up to a checkpoint: data, the base encoder, PEFT methods, training, evaluation."""
