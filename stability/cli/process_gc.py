"""The garbage collector of a process that runs one command: the ``stability`` script.

With torch, pandas and a command's modules loaded there are some 330,000 objects tracked
by the collector, nearly all of them module-level and alive until the process ends, and
every full collection walks all of them: 3 during a sweep command's imports and run, 0.15 s
together, and CPython's exit runs several more while it clears the modules, 0.35-0.45 s of
a 0.5-0.6 s exit on a 2-core machine (a sampling profile: ``gc_collect_main``; issue 27).

So the console script pauses collections while the command imports, then moves what the
imports made into the permanent generation (``gc.freeze``: still released by reference
count, never scanned again) and resumes them for the command's own work; and it freezes
again before the exit. Every ``atexit`` handler and ``weakref.finalize`` still runs at exit
(temporary directories, pools, a profiler's report); only reference cycles left at exit go
unvisited, which CPython never promises to collect at exit anyway.

``main()`` called in-process (tests, a notebook) changes nothing here: freezing a host
process's objects would keep its later cyclic garbage forever.
"""

import gc

_OWNED = {"process": False}


def own_process() -> None:
    """Called by the console script first: this process runs one command, then exits."""
    _OWNED["process"] = True
    gc.disable()


def imports_done() -> None:
    """After the command's imports: freeze what they made and collect as usual again."""
    if _OWNED["process"]:
        gc.freeze()
        gc.enable()


def quick_teardown() -> None:
    """Before the interpreter's exit: spare it its full collections (see the module)."""
    gc.freeze()
