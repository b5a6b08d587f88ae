"""The numerics: config, dtypes and precision, activations, inits, emulation, model, probe,
theory. The ground floor: imports nothing from the other wings."""
