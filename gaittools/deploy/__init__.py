"""Flow-free recognition with an exported student: the bundle format, loading it, the network input rule, clips, identify.
May import: sources, person, flow, store, protocols.
"""
