"""An answer's text as its tokens arrive, at a cost per token that does not grow with the answer.

Decoding the whole answer again at every step is quadratic in its length. A fast tokenizer's `DecodeStream`
(the tokenizers library) turns one token at a time into text, holding back a partial UTF-8 character until it is
whole, with the same result as decoding all tokens at once; a stop string is looked for only where it could end
in the new text. A tokenizer without a fast backend is decoded whole at each step, as before.
"""

from __future__ import annotations

from tokenizers.decoders import DecodeStream
from transformers import PreTrainedTokenizerBase


class AnswerText:
    """The decoded text of an answer's tokens, cut before the first stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: tuple[str, ...] = ()):
        self._tokenizer = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        self._stream = DecodeStream(skip_special_tokens=True) if self._backend is not None else None
        self._token_ids: list[int] = []
        self._stops = stops
        self._longest_stop = max((len(stop) for stop in stops), default=0)
        self.text = ""

    def add(self, token_id: int) -> bool:
        """Append one token's text; True when a stop string appeared (the text then ends before it)."""
        searched_from = self._search_start()
        if self._stream is not None:
            self.text += self._stream.step(self._backend, token_id) or ""
        else:
            self._token_ids.append(token_id)
            self.text = self._tokenizer.decode(self._token_ids, skip_special_tokens=True)
            searched_from = 0
        return self._cut_at_stop(searched_from)

    def finish(self, token_ids: list[int]) -> bool:
        """The answer ended (end of sequence or length): its text becomes the tokenizer's decode of all its tokens,
        including a last character whose bytes the stream still held back (U+FFFD, as decode() gives it). True
        when a stop string completes only there (the text then ends before it)."""
        searched_from = self._search_start()
        self.text = self._tokenizer.decode(token_ids, skip_special_tokens=True)
        return self._cut_at_stop(searched_from)

    def _search_start(self) -> int:
        """Where a stop string completed by the next text can start (the text before has none)."""
        return max(0, len(self.text) - self._longest_stop + 1)

    def _cut_at_stop(self, searched_from: int) -> bool:
        found = [index for index in (self.text.find(stop, searched_from) for stop in self._stops) if index >= 0]
        if found:
            self.text = self.text[: min(found)]
            return True
        return False
