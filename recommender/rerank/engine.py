"""Apply the re-ranking rules to a scored pool: the last stage before serving.

`rules_apply` copies the scorer's list (so the caller's "before" list stays intact for the
preview), loads the attributes every rule needs in one batch, runs the live rules in order on the
whole list, and returns the top k with a trace of what each rule did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from recommender.candidates.base import Context, PooledCandidate

from .models import Rule
from .params import params_clean
from .rules import RULE_FUNCTIONS
from .selectors import rerank_data_fetch, rules_for_surface

logger = logging.getLogger(__name__)


@dataclass
class RuleEffect:
    rule_id: int | None
    rule_name: str
    kind: str
    removed: list[int] = field(default_factory=list)
    promoted: list[int] = field(default_factory=list)  # moved up within, or into, the top k
    demoted: list[int] = field(default_factory=list)  # moved down within, or out of, the top k
    summary: str = ""


@dataclass
class RerankResult:
    items: list[PooledCandidate]
    trace: list[RuleEffect]


def _with_scores(ranked: list[PooledCandidate], limit: int | None = None) -> list[PooledCandidate]:
    """Copies of the first ``limit`` entries (own notes lists); missing scores become rank-based ones.

    Without a model (fallback lists) nothing is scored; 1/(1 + rank) keeps the given order and is
    positive, so boosts still have something to multiply. The ``sources`` dicts are shared: nothing
    after the merge writes to them.
    """
    known = [item.score for item in ranked if item.score is not None]
    floor = min(known) if known else None

    def score_of(item: PooledCandidate, rank: int) -> float:
        if item.score is not None:
            return item.score
        return floor if floor is not None else 1.0 / (1 + rank)

    return [
        PooledCandidate(
            item_id=item.item_id,
            sources=item.sources,
            reasons=item.reasons,
            score=score_of(item, rank),
            notes=list(item.notes),
        )
        for rank, item in enumerate(ranked[:limit])
    ]


def _movement(
    before: list[PooledCandidate], after: list[PooledCandidate], k: int, removed: set[int]
) -> tuple[list[int], list[int]]:
    old = {item.item_id: rank for rank, item in enumerate(before)}
    new = {item.item_id: rank for rank, item in enumerate(after)}
    promoted = [item.item_id for item in after[:k] if old.get(item.item_id, len(before)) > new[item.item_id]]
    demoted = [
        item.item_id
        for item in before[:k]
        if item.item_id not in removed and new.get(item.item_id, len(after)) > old[item.item_id]
    ]
    return promoted, demoted


def rules_apply(
    *, context: Context, ranked: list[PooledCandidate], k: int, rules: list[Rule] | None = None
) -> RerankResult:
    """Apply ``rules`` (default: the enabled rules of ``context.surface``, in order) and return the top k.

    ``ranked`` is the scorer's output, best first; it is not modified. Rules outside their
    period at ``context.now`` are skipped. Each returned item's ``notes`` says what rules did to it.
    """
    if rules is None:
        rules = rules_for_surface(surface=context.surface, generation=context.generation)
    trace: list[RuleEffect] = []
    live: list[tuple[Rule, dict]] = []
    for rule in rules:
        if not rule.is_live(context.now):
            continue
        # Saved rules were validated by the admin form; a row written around it must not break serving.
        params, errors = params_clean(rule.kind, rule.params)
        if errors:
            logger.warning("rerank.rule_invalid rule_id=%s kind=%s errors=%s", rule.pk, rule.kind, errors)
            trace.append(
                RuleEffect(
                    rule_id=rule.pk,
                    rule_name=rule.name,
                    kind=rule.kind,
                    summary="skipped, invalid parameters: " + " ".join(errors),
                )
            )
            continue
        live.append((rule, params))
    # No live rule: only the top k can be returned, so only they are copied (a pool is ~300).
    items = _with_scores(ranked, None if live else k)
    if not live:
        return RerankResult(items=items, trace=trace)
    data = rerank_data_fetch(
        item_ids=[item.item_id for item in items],
        rules=[(rule.kind, params) for rule, params in live],
        profile_id=context.profile_id,
        now=context.now,
        vector_index=context.vector_index if context.version_id is not None else None,
    )
    for rule, params in live:
        outcome = RULE_FUNCTIONS[rule.kind](items, data=data, params=params, k=k, context=context)
        promoted, demoted = _movement(items, outcome.items, k, set(outcome.removed))
        for item in outcome.items:
            note = outcome.notes.get(item.item_id)
            if note:
                item.notes.append(note)
        trace.append(
            RuleEffect(
                rule_id=rule.pk,
                rule_name=rule.name,
                kind=rule.kind,
                removed=outcome.removed,
                promoted=promoted,
                demoted=demoted,
                summary=outcome.summary,
            )
        )
        items = outcome.items
    logger.debug("rerank.applied surface=%s rules=%s pool=%s k=%s", context.surface, len(live), len(ranked), k)
    return RerankResult(items=items[:k], trace=trace)
