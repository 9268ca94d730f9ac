"""Each log line reaches the stream in one write.

Worker processes share the supervisor's stderr: a line written as two
writes (text, then newline) interleaves with another worker's line and a
log collector sees two half-records glued together.
"""

from __future__ import annotations

import io
import logging

import structlog

from relay.obs import configure_logging


class WriteRecorder(io.StringIO):
    """A text stream that remembers every write call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_a_relay_log_line_is_one_write_ending_in_a_newline() -> None:
    stream = WriteRecorder()
    configure_logging("info", "json", stream=stream)
    try:
        structlog.get_logger("relay").info("relay.listening", http_port=1)
    finally:
        configure_logging("info", "json")
    assert len(stream.writes) == 1
    assert stream.writes[0].endswith("}\n")


def test_a_library_log_line_is_one_write_ending_in_a_newline() -> None:
    stream = WriteRecorder()
    configure_logging("info", "json", stream=stream)
    try:
        logging.getLogger("hypercorn.error").warning("something")
    finally:
        configure_logging("info", "json")
    assert len(stream.writes) == 1
    assert stream.writes[0].endswith("}\n")
