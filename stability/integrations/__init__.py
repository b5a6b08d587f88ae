"""The tool inside the user's own code: ``watch`` in a training loop, the pytest plugin.

This wing sits on floor 3 beside the report (whose figures and page parts it uses, one way),
below the CLI, whose ``doctor --model`` trains under ``watch``.
"""
