"""Per-request results and statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class GenerationStats:
    new_tokens: int = 0  # tokens generated (EOS included when it ended the reply)
    prompt_tokens: int = 0  # tokens in the encoded prompt
    prefix_reused: int = 0  # of those, taken from a stored prompt's cache instead of prefilled (prefix_cache.py)
    target_forwards: int = 0  # target model calls, prefill included
    drafted: int = 0  # draft tokens proposed to the target
    accepted: int = 0  # draft tokens the target accepted
    acceptance_rate: float = 0.0  # accepted / drafted
    accepted_hist: list[int] = field(default_factory=list)  # [n] = verify steps (with drafts) accepting n
    mean_tokens_per_forward: float = 0.0  # new_tokens / target_forwards
    ttft_s: float = 0.0  # request start -> first token
    total_s: float = 0.0  # request start -> end
    tokens_per_s: float = 0.0  # new_tokens / total_s
    draft_s: float = 0.0  # time spent inside the drafter
    verify_s: float = 0.0  # time spent in target forwards + acceptance
    stop_reason: str = "length"  # "eos" | "stop" | "length" | "time" (the deadline passed)
    drafter: str = "none"  # drafter spec used

    def record_step(self, drafted: int, accepted: int) -> None:
        self.target_forwards += 1
        if drafted:
            self.drafted += drafted
            self.accepted += accepted
            if len(self.accepted_hist) <= accepted:
                self.accepted_hist.extend([0] * (accepted + 1 - len(self.accepted_hist)))
            self.accepted_hist[accepted] += 1

    def finish(self, total_s: float) -> None:
        self.total_s = total_s
        self.acceptance_rate = self.accepted / self.drafted if self.drafted else 0.0
        self.mean_tokens_per_forward = self.new_tokens / self.target_forwards if self.target_forwards else 0.0
        self.tokens_per_s = self.new_tokens / total_s if total_s > 0 else 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerationResult:
    text: str  # the reply text (stop string and special tokens excluded)
    token_ids: list[int]  # the generated token ids
    stats: GenerationStats  # how it was produced
