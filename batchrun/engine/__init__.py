"""The engine every way of running a job shares: preflight, budget, writer, pipeline.

``preflight`` does what happens before the first request, ``budget`` keeps the job's money,
``writer`` puts records in the output files, ``pipeline`` runs reader → workers → writer for a
sync run. ``batchrun.runner`` composes them into one job; docs/architecture.md draws the flow.
"""
