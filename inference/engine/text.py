"""Token ids -> text deltas for streaming, without broken characters or stop-string fragments.

`IncrementalDetokenizer` decodes only a short window of recent tokens per push (prefix
offset / read offset, as in text-generation-inference), never the whole reply, and holds
back text ending in U+FFFD: a multi-byte character split across tokens is emitted whole.

`StopStringFilter` holds back the longest tail that could still grow into a stop string
and cuts the text exactly before the first stop string; stop text itself is never emitted.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.tokens: list[int] = []
        self.prefix_offset = 0  # start of the decode window (context for spacing rules)
        self.read_offset = 0  # tokens before this are already emitted

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=self.skip_special_tokens)

    def push(self, token: int) -> str:
        """Add one token; return the newly complete text (may be "")."""
        self.tokens.append(token)
        prefix_text = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.tokens[self.prefix_offset:])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
            return new_text[len(prefix_text):]
        return ""

    def flush(self) -> str:
        """End of reply: whatever is still held back, even an incomplete character."""
        prefix_text = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.tokens[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.tokens)
        return new_text[len(prefix_text):]


class StopStringFilter:
    def __init__(self, stops: list[str] | None):
        self.stops = [s for s in (stops or []) if s]
        self.pending = ""  # text received but not yet released
        self.stopped = False

    def push(self, text: str) -> str:
        """Add text; return what is safe to emit now. Sets `stopped` when a stop string appears."""
        if not self.stops:
            return text
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        hold = self._held_suffix_length()
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold:]
        return out

    def _held_suffix_length(self) -> int:
        """Length of the longest suffix of pending that is a proper prefix of some stop string."""
        for size in range(min(len(self.pending), max(map(len, self.stops)) - 1), 0, -1):
            tail = self.pending[-size:]
            if any(s.startswith(tail) for s in self.stops):
                return size
        return 0

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
