"""Finding and decoding inputs: dataset folders and their naming rules, videos and frame folders, OpenGait pickles.
Imports nothing else of gaittools.
"""
