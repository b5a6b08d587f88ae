"""The course notes' reference code: data, losses, regularisation and the notes' curves."""
