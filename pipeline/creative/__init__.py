"""Creative outputs on the face stages: zoom animations (`zoom.py`, camera path in `camera.py`), the enhance loop, choosing the target face."""
