"""The face stages, each in its own module: detect, track, align, super-resolve (crop scheduler), composite; `chunk.py` runs them on a chunk of frames for every engine."""
