"""Finding and following people (foreground, blobs, tracks, localisation) and what is cut from them (crops, silhouettes, one sequence's arrays).
May import: sources.
"""
