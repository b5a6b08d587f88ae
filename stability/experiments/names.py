"""The experiments' names, in the notes' order: importable without torch (the CLI's help)."""

NAMES = ("polynomial", "weight_decay", "dropout", "depth", "float16")
