"""What an audio file's own container says it holds, against what is there.

libsndfile reads a cut-off WAV, AIFF or Ogg file without complaint (it counts what is present)
and pads a cut-off MP3 to the length in its Xing header, so a truncated download or copy would
keep its decodable part with the whole transcript. These checks read the container's bookkeeping:
- WAV/AIFF: the data chunk's declared size against the bytes present;
- MP3: walking the frames, the last one must be whole, and their count must reach the one in the
  Xing/Info/VBRI header when there is one;
- Ogg (Vorbis, Opus, FLAC in Ogg): the last page must be whole and carry the end-of-stream flag.
A FLAC file's STREAMINFO sample count is compared with the decoded length in audio.py.
"""

from __future__ import annotations

from typing import IO

_WINDOW = 1 << 20
_OGG_MAX_PAGE = 27 + 255 + 255 * 255

# MPEG audio frame headers: bitrates (kbit/s) by (MPEG-1 or 2/2.5, layer), sample rates by version bits.
_BITRATES = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


class _Bytes:
    """Random access to a seekable file through a window, for walking headers without reading it all."""

    def __init__(self, fh: IO[bytes]):
        self.fh = fh
        fh.seek(0, 2)
        self.size = fh.tell()
        self.start, self.data = 0, b""

    def get(self, pos: int, n: int) -> bytes:
        if pos < 0:
            return b""
        if not (self.start <= pos and pos + n <= self.start + len(self.data)):
            self.fh.seek(pos)
            self.start, self.data = pos, self.fh.read(max(n, _WINDOW))
        return self.data[pos - self.start : pos - self.start + n]


def missing_tail(fh: IO[bytes], fmt: str) -> str | None:
    """What is missing from the file by its container's own header, or None when it is whole (or
    the container keeps no such record). `fmt` is libsndfile's major format name."""
    data = _Bytes(fh)
    try:
        head = data.get(0, 12)
        if head[:4] in (b"RIFF", b"FORM") and head[8:12] in (b"WAVE", b"AIFF", b"AIFC"):
            return _chunk_shortfall(data, little=head[:4] == b"RIFF")
        if head[:4] == b"OggS":
            return _ogg_cut(data)
        if fmt == "MP3":
            return _mp3_cut(data)
        return None
    finally:
        fh.seek(0)


def _chunk_shortfall(data: _Bytes, little: bool) -> str | None:
    pos = 12
    for _ in range(10_000):
        if pos + 8 > data.size:
            return None
        chunk = data.get(pos, 8)
        size = int.from_bytes(chunk[4:8], "little" if little else "big")
        if chunk[:4] in (b"data", b"SSND"):
            if size in (0, 0xFFFFFFFF):  # a streamed file: its length is unknown by design
                return None
            missing = size - (data.size - pos - 8)
            return f"its {chunk[:4].decode()} chunk is {missing} bytes shorter than its header declares" \
                if missing > 1 else None  # one pad byte may be missing
        pos += 8 + size + (size & 1)
    return None


def _ogg_cut(data: _Bytes) -> str | None:
    start = max(0, data.size - _OGG_MAX_PAGE)
    tail = data.get(start, data.size - start)
    last: tuple[int, int] | None = None  # (end, header type) of the last whole page
    at = tail.find(b"OggS")
    while at >= 0:
        if at + 27 <= len(tail) and tail[at + 4] == 0:
            segments = tail[at + 26]
            lacing = tail[at + 27 : at + 27 + segments]
            end = at + 27 + segments + sum(lacing)
            if len(lacing) == segments and end <= len(tail):
                last = (end, tail[at + 5])
        at = tail.find(b"OggS", at + 1)
    if last is None:
        return None
    if last[0] == len(tail):
        return None if last[1] & 0x04 else "its last Ogg page has no end-of-stream flag: the stream was cut off"
    if tail[last[0] : last[0] + 4] == b"OggS"[: len(tail) - last[0]]:
        return "its last Ogg page is cut off"
    return None  # bytes after the stream that are not Ogg: not this check's business


def _mpeg_frame(h: bytes) -> tuple[int, int, int] | None:
    """(frame length in bytes, version bits, channel mode) of an MPEG audio frame header, or None."""
    if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return None
    version, layer_bits = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    bitrate_index, rate_index, padding = h[2] >> 4, (h[2] >> 2) & 3, (h[2] >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None  # reserved values, or free-format bitrate (no length in the header)
    layer, mpeg = 4 - layer_bits, 1 if version == 3 else 2
    bitrate, rate = _BITRATES[(mpeg, layer)][bitrate_index] * 1000, _RATES[version][rate_index]
    if layer == 1:
        length = (12 * bitrate // rate + padding) * 4
    else:
        length = (144 if layer == 2 or mpeg == 1 else 72) * bitrate // rate + padding
    return length, version, h[3] >> 6


def _declared_frames(frame: bytes, version: int, mode: int) -> int | None:
    """The frame count in a Xing/Info or VBRI header inside the first frame, if it has one."""
    side = (17 if mode == 3 else 32) if version == 3 else (9 if mode == 3 else 17)
    tag = frame[4 + side : 4 + side + 12]
    if tag[:4] in (b"Xing", b"Info") and int.from_bytes(tag[4:8], "big") & 1:
        return int.from_bytes(tag[8:12], "big")
    if frame[36:40] == b"VBRI":
        return int.from_bytes(frame[50:54], "big")
    return None


def _next_frame(data: _Bytes, pos: int, limit: int) -> int | None:
    """The next position at or after `pos` (searching `limit` bytes) where a frame header is
    followed by another one (or the end of the file): a real frame, not a stray 0xFF byte."""
    end = min(data.size, pos + limit)
    while pos + 4 <= end:
        chunk = data.get(pos, min(_WINDOW, end - pos))
        at = chunk.find(b"\xff")
        if at < 0:
            pos += len(chunk)
            continue
        pos += at
        frame = _mpeg_frame(data.get(pos, 4))
        if frame and (pos + frame[0] >= data.size or _mpeg_frame(data.get(pos + frame[0], 4))):
            return pos
        pos += 1
    return None


def _mp3_cut(data: _Bytes) -> str | None:
    pos = 0
    head = data.get(0, 10)
    if head[:3] == b"ID3" and len(head) == 10:  # ID3v2 tag: a syncsafe size, plus a footer if flagged
        pos = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10])) + (10 if head[5] & 0x10 else 0)
    first = _next_frame(data, pos, 1 << 16)
    if first is None:
        return None
    frame = _mpeg_frame(data.get(first, 4))
    assert frame is not None
    declared = _declared_frames(data.get(first, frame[0]), frame[1], frame[2])
    pos, frames = first + (frame[0] if declared is not None else 0), 0
    while pos + 4 <= data.size:
        frame = _mpeg_frame(data.get(pos, 4))
        if frame is None:
            if data.size - pos <= 128 + 32 or data.get(pos, 3) == b"TAG" or data.get(pos, 8) == b"APETAGEX":
                break  # trailing ID3v1 / APE tags
            resync = _next_frame(data, pos + 1, data.size)
            if resync is None:
                break
            pos = resync
            continue
        if pos + frame[0] > data.size:
            return f"its last MPEG frame is cut off ({pos + frame[0] - data.size} of {frame[0]} bytes missing)"
        frames += 1
        pos += frame[0]
    if declared is not None and frames < declared - 1:
        return f"it holds {frames} MPEG frames of the {declared} its Xing/Info header declares"
    return None
