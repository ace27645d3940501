"""Dynosaur (Yin et al., 2023): instruction data from existing annotated datasets.

Per registered dataset: its metadata -> up to 3 tasks from ONE LLM call -> every usable row
times every kept task as an instance. The cost is one call per dataset, not one per row.

Declared in `method.py`.
"""
