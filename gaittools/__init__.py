"""gaittools: raw gait videos -> person-cropped gray clips and TV-L1 flow in a Zarr store.

The library behind the ``gaittools`` command. It never imports the ``training`` package, so
preprocessing machines need no training stack.
"""

import os

__version__ = "0.1.0"

# OpenCV and its FFmpeg speak on the console about files we then report ourselves, in one line
# that names the file ("not a readable video"): "[ WARN:0@0.01] ... can't be used to capture by
# name", "moov atom not found". Quiet by default, before any module imports cv2; a user's own
# OPENCV_LOG_LEVEL / OPENCV_FFMPEG_LOGLEVEL (e.g. DEBUG / 48) still wins.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
