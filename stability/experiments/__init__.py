"""The notes' experiments, reproduced with seeds: the chapters' claims shown in training.

One module per experiment (``polynomial``, ``weight_decay``, ``dropout``, ``depth``,
``float16``), each a pure function of its seeds and sizes returning tidy rows; ``claims``
states what each shows as a count over seeds; ``figures`` draws them; ``runner`` runs a
selection, writes a CSV and a figure each and stores the rows. This wing stands between
the floor-2 wings it composes (notes, train, sweep) and the report that shows it.
"""
