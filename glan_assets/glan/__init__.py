"""GLAN (Li et al., 2024): taxonomy -> subjects -> syllabi -> class sessions -> questions -> answers.

Declared in `method.py`.
"""
