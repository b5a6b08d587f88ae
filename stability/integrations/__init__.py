"""The tool inside the user's own code: ``watch`` in a training loop, the pytest plugin.

This wing sits on floor 4 beside the CLI (it may use the report to write pages, and
nothing but the public API imports it).
"""
