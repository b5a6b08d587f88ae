"""The user's own network: load it from ``pkg.module:factory`` and probe it module by module.

``spec`` is the shared entry point (``--model``, ``--model-args``, ``--input``, ``--target``,
``--loss``, ``--mode``) for every command that takes a user's model, built on ``refs`` (the
user's code behind a fence), ``batch`` (batches as they come), ``losses`` and ``outputs``;
``probe`` measures it per module.
"""
