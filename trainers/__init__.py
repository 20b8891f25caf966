"""Everything up to a checkpoint: data, the base encoder, PEFT methods, training, evaluation.

Importing this package (or any module of it) registers nothing with peft and imports neither
torch nor peft; `trainers.methods.register()` registers the project's peft methods.
"""
