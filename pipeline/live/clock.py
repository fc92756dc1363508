"""The run's clock: a live source's timestamps mapped onto `time.monotonic()`.

A source's frames and audio packets carry its own timestamps (a camera's, a sender's, a file's);
the recording needs one clock for both, so that sound and picture that left the source together
land together. `Timeline` maps source seconds onto the reader's monotonic clock with one offset,
fixed when the stream (re)starts: from then on an item is due at its source time plus that offset,
whenever the demuxer happens to hand it over (a burst read at the open, audio interleaved ahead
of the video, a frame that waited for the decoder). The same due times pace a file played with
`--realtime`.
"""

from __future__ import annotations

import math

RESYNC_SECONDS = 5.0  # a jump of the source's clock this large (a restart, a wrap, a splice) starts the mapping afresh


class Timeline:
    """Source seconds → the run's clock (`time.monotonic()` seconds).

    `at(seconds, now, stream)` is the time an item stamped `seconds` is due: `seconds + offset`.
    The offset is set by the first item after a `restart()` (the open, a reconnect, a file
    starting to play) so that the item is due `now`. It is set again only where the timestamps
    jump: when an item's due time is more than `RESYNC_SECONDS` away from where the previous item
    of its `stream` (any key: the video, the audio) and the time passed since would put it. A
    steady difference between the two clocks (data read late or in bursts) moves nothing. A new
    offset never puts an item before one already given, so the run's clock only runs forward.
    An item without a timestamp is due `now`. Not thread-safe: one reader thread owns it.

    `lead` is how far the clock runs ahead of the items' earliest arrival: the open reads ahead
    to probe the stream, so the first item, which sets the offset, was read late by that much.
    Another input's clock (a microphone's) is moved by the difference of the two leads to match.
    """

    def __init__(self):
        self._offset: float | None = None
        self._last = -math.inf  # the latest due time given
        self.lead = 0.0  # s: the most an item was due after it was read, since the offset was set
        self._previous: dict[object, tuple[float, float]] = {}  # stream -> (due, now) of its last item

    def restart(self) -> None:
        """The next item starts the mapping afresh (its timestamps may have nothing to do with the last)."""
        self._offset = None
        self._previous.clear()

    def at(self, seconds: float | None, now: float, stream: object = "video") -> float:
        if seconds is None:
            return now
        previous = self._previous.get(stream)
        if self._offset is None or (
            previous is not None and abs(seconds + self._offset - previous[0] - (now - previous[1])) > RESYNC_SECONDS
        ):
            self._offset = max(now, self._last) - seconds
            self.lead = 0.0
        due = seconds + self._offset
        self._last = max(self._last, due)
        self.lead = max(self.lead, due - now)
        self._previous[stream] = (due, now)
        return due
