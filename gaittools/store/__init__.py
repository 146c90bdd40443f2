"""The Zarr store (one self-describing group per sequence), its file writer, the manifest, previews and the OpenGait export.
May import: sources, person, flow.
"""
