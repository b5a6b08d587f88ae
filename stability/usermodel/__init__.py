"""The user's own network: load it from ``pkg.module:factory`` and probe it module by module.

``spec`` is the shared entry point (``--model``, ``--model-args``, ``--input``, ``--target``,
``--loss``) for every command that takes a user's model; ``probe`` measures it per module.
"""
