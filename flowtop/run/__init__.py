"""The run modes (live view, dump, export-only, record/replay) and what a run starts."""
