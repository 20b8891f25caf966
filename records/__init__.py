"""What a run, a data build or a report is on disk, as plain data: the manifest type, the names
under runs/, summaries of seeds, and the project's errors.

Imports neither torch, peft nor transformers: `trainers/`, `interp/` and `reports/` all read
runs through it, and `reports/` renders from JSON alone.
"""
