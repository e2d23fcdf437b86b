"""Drafts for speculative decoding, taken from the text itself (prompt lookup).

Notebook work is full of replies that repeat their prompt: "fix this cell", "rewrite this
paragraph", "extract these fields". When the last few tokens of the reply so far also occur
earlier (in the prompt or the reply), the tokens that followed them there are a good guess for
what comes next. The engine puts that guess into the same batch as the next token, lets the
model score every position at once, and keeps the guessed tokens only as far as the model's own
sampling agrees with them, so the output is exactly what decoding one token at a time gives;
a good guess turns several decode steps into one.

Nothing here needs a second model: this is the general drafter Ollama lacks (it drafts only with
model-specific MTP heads).
"""

from __future__ import annotations

from collections.abc import Iterable

#: The n-gram sizes looked up, longest first. A long match pins down where in the prompt the
#: reply is (in a code cell, "return x *" occurs on every line; the line's whole start does not);
#: a pair is the shortest that still predicts; a single token matches too often in free text.
NGRAM_SIZES = (12, 8, 5, 3, 2)
#: After a refused draft, this many steps go without one, doubling while drafts keep failing.
#: On a CPU a batch of two tokens costs well over one, so guessing wrong is not free.
FIRST_PAUSE, LONGEST_PAUSE = 1, 64
#: Weight of the newest step in the running cost per token, with drafts and without, and how
#: much dearer a token with drafts may run before drafting pauses (one noisy step is no verdict).
COST_WEIGHT, COST_MARGIN = 0.5, 1.05
#: A draft this long taken whole means the reply is copying a stretch: whatever pause earlier
#: refusals earned is over (a block of a repetitive reply ends in a partial draft, and the next
#: block should not wait out a pause of up to LONGEST_PAUSE steps).
COPYING = 4


class PromptLookup:
    """The token history of one sequence, indexed by its n-grams; drafts continue the most
    recent earlier occurrence of the history's longest matching n-gram, and then keep following
    that same place for as long as the reply goes on copying it.

    Following matters as much as finding: text that is being repeated is often repetitive
    itself (a cell of near-identical functions), so the n-gram just written occurs in many
    places, and the latest of them is mostly the wrong one. The place a draft was taken from,
    moved on by every token that agreed with it, is where the copy really is; only when the
    reply leaves it (the one change of an edit) is the index asked again.

    The draft length adapts: it doubles (up to ``max_draft``) while drafts are taken whole and
    halves when one is cut short. A draft refused at its first token pauses drafting for a few
    steps, and the pause doubles while that keeps happening, so free text, where matches rarely
    predict anything, soon costs next to nothing extra. Only a match of the longest n-gram
    drafts through a pause: a reply that has begun to repeat itself should not wait out a pause
    earned while it was still finding its words. The same pause follows whenever a token
    costs more time with drafts than without, as measured on this machine (:meth:`timed`): how
    much a wider batch costs depends on the CPU, the model's weight types and the context, and
    only the clock knows.
    """

    def __init__(self, tokens: Iterable[int], max_draft: int) -> None:
        self.history: list[int] = []
        self.max_draft = max_draft
        self.length = max_draft
        self.pause = 0  # steps left without a draft
        self.next_pause = FIRST_PAUSE
        # n -> {n-gram: where the token after its latest occurrence sits in history}
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in NGRAM_SIZES}
        self._cost: dict[bool, float | None] = {True: None, False: None}  # ns per token, with / without
        self._source: int | None = None  # where the text being copied goes on, while it is
        self._taken_whole = False  # the last draft was accepted to its last token
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        """Add a token to the history (the n-gram ending just before it now points at it)."""
        history = self.history
        end = len(history)
        for n, index in self._index.items():
            if end >= n:
                index[tuple(history[end - n:end])] = end
        source = self._source
        self._source = source + 1 if source is not None and history[source] == token else None
        history.append(token)

    def draft(self, limit: int) -> list[int]:
        """Up to ``min(limit, current length)`` tokens that followed the last n-gram before."""
        if self.pause > 0:
            self.pause -= 1
            strong = self._strong_match()
            if strong is None:
                return []
            self._source = strong  # a long match outweighs the pause: draft from it
        limit = min(limit, self.length)
        if limit <= 0:
            return []
        history = self.history
        if self._source is None:
            self._source = self._find()
        if self._source is None:
            return []
        return history[self._source:self._source + limit]

    def _strong_match(self) -> int | None:
        """Where the history's longest n-gram occurred before, if it did: a match that long is
        the reply repeating text (its own, often), and worth a draft even while paused."""
        n = NGRAM_SIZES[0]
        if len(self.history) < n:
            return None
        return self._index[n].get(tuple(self.history[-n:]))

    def _find(self) -> int | None:
        """Where the token after the latest earlier occurrence of the longest n-gram the
        history ends with sits, if any n-gram of it occurred before."""
        history = self.history
        for n in NGRAM_SIZES:
            if len(history) < n:
                continue
            start = self._index[n].get(tuple(history[-n:]))
            if start is not None:
                return start
        return None

    def feedback(self, drafted: int, accepted: int) -> None:
        """How many of a draft's tokens the model agreed with, to size the next draft."""
        if not drafted:
            return
        self._taken_whole = accepted == drafted
        if self._taken_whole:
            self.length = min(self.max_draft, self.length * 2)
            if drafted >= COPYING:
                self.pause, self.next_pause = 0, FIRST_PAUSE
        else:
            self.length = max(1, self.length // 2)
        if not accepted:
            self._back_off()

    def timed(self, drafted: bool, tokens: int, ns: int) -> None:
        """A decode step took ``ns`` and gave ``tokens`` tokens (all sequences of the batch);
        ``drafted``: this sequence had a draft in it. Drafting pauses while it is the dearer way,
        but never right after a draft taken whole: the next one is twice as long, and on a CPU a
        wide batch costs far less per token than a narrow one (gemma3: 2 tokens in one step cost
        0.9-1.3x two single steps, 17 tokens 0.5x), so the short drafts that begin every copy
        would otherwise stop it before it pays."""
        per_token = ns / max(tokens, 1)
        old = self._cost[drafted]
        self._cost[drafted] = per_token if old is None else old + COST_WEIGHT * (per_token - old)
        with_drafts, without = self._cost[True], self._cost[False]
        if not drafted or with_drafts is None or without is None:
            return
        if with_drafts > without * COST_MARGIN:
            if not self._taken_whole:
                self._back_off()
        else:
            self.next_pause = FIRST_PAUSE  # drafting pays: a later refusal pauses it only briefly

    def _back_off(self) -> None:
        self.pause = max(self.pause, self.next_pause)
        self.next_pause = min(LONGEST_PAUSE, self.next_pause * 2)
