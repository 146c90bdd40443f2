"""Evaluation protocols as data and the split tables built from them.
May import: sources, person, flow, store.
"""
