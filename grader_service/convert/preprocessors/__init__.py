"""Small notebook transformations, one concern each; commands are lists of these.

- base: the Preprocessor/Context shape and `run_pipeline`.
- validate_source: checks an instructor's notebook (metadata, markers).
- release_cells: lock cells, stub solutions, clear outputs / hidden tests / mark schemes, checksums.
- reconcile: put the instructor's protected cells back into a submission.
- feedback_cells: hide hidden tests and annotate scores for the feedback page.
"""
