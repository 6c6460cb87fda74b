"""The results pages (docs/results.md, docs/review.md): hand-written markdown with generated
blocks between markers, filled from the committed result files.

- ``load``: reading result files and naming where they came from (file, commit, machine);
- ``page``: the markers, and ``Figure`` for a plot a block shows;
- ``results``, ``review``: one function per generated block, returning its lines;
- ``figures``: the plots themselves, drawn in their own step.

A block holds tables and sentences computed from the data; a conclusion written by hand sits
outside the markers, in the markdown, with the date it was written.
"""
