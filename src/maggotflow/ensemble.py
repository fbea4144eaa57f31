"""Ensembles of taggers with a majority vote (the 20221228 tagger: bagging).

An ensemble is a model folder of its own::

    config.json      format_version, kind "ensemble", labels, colors, post_rule, vote,
                     members (relative folder names, in vote order)
    provenance.json  the members' provenance summaries
    members/NNN/     one complete tagger instance per member (`maggotflow.instance`)

Members are trained independently (so a cluster trains them in parallel: one job each,
`maggotflow train --bootstrap --seed k`), possibly on different windows (1.5 s and 3 s in
20221228); they must share the label list. `maggotflow ensemble OUT MEMBER...` assembles
them. An `Ensemble` predicts like a tagger (`segment_specs`, `predict`): given the
segments of each of its distinct windows (built once by the caller,
`maggotflow.prediction.Predictor`), every member classifies them and each time step gets
the label most members vote for; a tie goes to the tied label with the highest summed
member probability. Each member votes with its calibrated per-step argmax (its decision's
offsets, `maggotflow.decoding`); members' HMM decoders are not used: the vote is per step
(train members with `decoding: argmax`, as preset 20221228 does). The post-rule, if any, is
applied by the caller to the voted labels.
The domain check of its predictions (`maggotflow.domain`) uses its first member's reference
(`Ensemble.domain`): members of one ensemble are trained on the same data, and the first
one's segment spec is the first of `segment_specs`, whose segments prediction scores.
Cost grows with the number of members (~50x for 50).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from maggotflow.instance import (
    CONFIG_NAME,
    FORMAT_VERSION,
    InstanceError,
    ModelInstance,
    check_model_folder,
    check_target,
    created_by,
    read_provenance,
    save_folder,
    write_description,
)
from maggotflow.postrule import POST_RULES, normalise_post_rule

KIND = "ensemble"
VOTES = ("majority",)


class Ensemble:
    """Tagger instances voting together, predicting like one tagger (`segment_specs`, `predict`).

    Attributes: members, labels, colors, post_rule, vote, provenance, path, segment_specs
    (the members' distinct specs, in order of first appearance), domain (the first member's
    domain reference, or None).
    """

    kind = KIND

    def __init__(self, members: Sequence[ModelInstance], post_rule: str | None = None, vote: str = "majority",
                 provenance: dict | None = None, path: str | Path | None = None):
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        for m in members:
            if m.kind != "tagger":
                raise ValueError(f"ensemble members must be taggers, {m.path} is a {m.kind} instance")
            if m.labels != members[0].labels:
                raise ValueError(f"ensemble members must share their labels: {m.path} has {m.labels}, "
                                 f"{members[0].path} has {members[0].labels}")
        if vote not in VOTES:
            raise ValueError(f"vote must be one of {VOTES}, got {vote!r}")
        if post_rule not in POST_RULES:
            raise ValueError(f"post_rule must be one of {POST_RULES}, got {post_rule!r}")
        self.members = members
        self.labels = list(members[0].labels)
        self.colors = members[0].colors
        self.post_rule = post_rule
        self.vote = vote
        self.provenance = dict(provenance or {})
        self.path = None if path is None else Path(path)
        # Members grouped by segment spec: a caller builds each distinct spec's segments once.
        self.segment_specs = list(dict.fromkeys(m.segment_spec for m in members))
        self._member_spec = [self.segment_specs.index(m.segment_spec) for m in members]
        self.domain = members[0].domain  # computed on segment_specs[0], the first member's

    def predict(self, segments: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The members' majority vote: class indices (B,) int64, mean member probabilities (B, K).

        segments: one (B, 2, P, W) tensor per spec of `segment_specs` (the interface of a
        tagger, `ModelInstance.predict`). Each member votes for its most probable label; a
        tie goes to the tied label with the highest summed member probability (the score is
        votes + summed probabilities / (members + 1): the tie-break term is < 1, so it
        never outweighs one vote).
        """
        k = len(self.labels)
        votes = torch.zeros(segments[0].shape[0], k, dtype=torch.float32, device=segments[0].device)
        probabilities = torch.zeros_like(votes)
        for member, spec in zip(self.members, self._member_spec):
            classes, p = member.predict([segments[spec]])
            votes += torch.nn.functional.one_hot(classes, k).float()
            probabilities += p
        n = len(self.members)
        return (votes + probabilities / (n + 1)).argmax(dim=1), probabilities / n

    def to(self, device) -> "Ensemble":
        for m in self.members:
            m.to(device)
        return self

    @property
    def config(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "labels": self.labels,
            "colors": self.colors,
            "post_rule": self.post_rule,
            "vote": self.vote,
            "members": [f"members/{i:03d}" for i in range(len(self.members))],
            "created_by": created_by(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the ensemble folder atomically (members copied in); returns the path."""

        def write_into(tmp: Path) -> None:
            write_description(tmp, self.config, self.provenance)
            for i, member in enumerate(self.members):
                target = tmp / "members" / f"{i:03d}"
                target.mkdir(parents=True)
                member.write_files(target, title_prefix=f"member {i:03d}")

        self.path = save_folder(path, write_into)
        return self.path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> "Ensemble":
        path = Path(path)
        config = check_model_folder(path, kinds=(KIND,))
        try:
            names = [str(n) for n in config["members"]]
            post_rule, vote = config.get("post_rule"), config.get("vote", "majority")
        except (KeyError, TypeError) as err:
            raise InstanceError(path, f"{CONFIG_NAME} is incomplete ({err})") from None
        members = [ModelInstance.load(path / name, device=device) for name in names]
        provenance = read_provenance(path)
        try:
            return cls(members, post_rule=post_rule, vote=vote, provenance=provenance, path=path)
        except ValueError as err:
            raise InstanceError(path, str(err)) from None


def load_model(path: str | Path, device: str | torch.device | None = None) -> ModelInstance | Ensemble:
    """A tagger instance or an ensemble, whichever the folder holds."""
    config = check_model_folder(path)
    if config["kind"] == KIND:
        return Ensemble.load(path, device=device)
    return ModelInstance.load(path, device=device)


def assemble(member_paths: Sequence[str | Path], out: str | Path, post_rule: str | None = None) -> Ensemble:
    """Load the member taggers, check they agree, and save them as one ensemble at `out`.

    post_rule: as the user wrote it (`maggotflow.postrule.normalise_post_rule`; ValueError
    if unknown). Members that are not taggers or disagree on labels: InstanceError naming `out`.
    A folder at `out` holding anything maggotflow did not write is refused first (`check_target`).
    """
    check_target(out)
    members = [ModelInstance.load(p) for p in member_paths]
    provenance = {
        "command": "ensemble",
        "members": [{"path": str(Path(p).resolve()), "window": m.segment_spec.window,
                     "frame_interval": m.segment_spec.frame_interval,
                     "best": m.provenance.get("best"), "seed": m.provenance.get("seed")}
                    for p, m in zip(member_paths, members)],
    }
    post_rule = normalise_post_rule(post_rule)  # a bad rule is the caller's ValueError, not the members'
    try:
        ensemble = Ensemble(members, post_rule=post_rule, provenance=provenance)
    except ValueError as err:
        raise InstanceError(out, str(err)) from None
    ensemble.save(out)
    return ensemble
