"""The one way a key is made: `digest(kind, payload)`, the sha256 of a canonical encoding.

Every store key, cache key and resumable-progress fingerprint of flatvol is a `digest` of what
fixes the thing keyed (the spec's protocol, a run's settings, a kernel's settings, the data's
bytes, ...). `KEY_RULES` is the one table of how each kind of key is made: its schema version,
its encoding, how many hex digits are kept and which fields are left out at their defaults,
with why. (Checksums of bytes that verify a file, flatvol.io and flatvol.resumable, are another
concept: they detect damage and key nothing.)

Schema 1 is each kind's encoding as it was before this table existed, byte for byte, so every
key written by earlier versions (store rows, OUT/cache file names, progress fingerprints) is
found again: neither the kind nor the schema enters a schema-1 hash. From schema 2 on, the kind
and the schema are hashed first (two kinds never share a key, and a new schema never reuses an
old one's keys), then the payload as compact canonical JSON. A kind whose payload changes gets
a new schema in `KEY_RULES`, its old rule moves to `LEGACY_RULES`, and whatever holds the old
keys is migrated once by looking them up with `digest(kind, payload, schema=old)`, instead of
a patch that keeps the old keys valid where the key is computed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flatvol.volume_settings import DEFAULT_BATCHNORM

__all__ = ["KEY_RULES", "LEGACY_RULES", "KeyRule", "digest"]

# How a schema-1 payload becomes bytes (each kind's encoding before this module):
# - "json-compact": JSON with sorted keys and no spaces (specs' content digests);
# - "json-spaced": JSON with sorted keys and json.dumps' default ", " and ": " separators;
# - "stream": a sequence of parts hashed one after the other, a `bytes` part as it is (raw
#   array bytes, a file's bytes), any other part as "json-spaced" JSON.
Encoding = Literal["json-compact", "json-spaced", "stream"]


@dataclass(frozen=True)
class KeyRule:
    """How one kind of key is made.

    Attributes:
        kind: What is keyed, e.g. "kernel".
        schema: The version of this rule; 1 is the encoding of the keys written before rules
            existed (neither kind nor schema hashed), later ones hash both first.
        encoding: How a schema-1 payload becomes bytes (see `Encoding`); schema >= 2 always
            hashes compact canonical JSON, `bytes` parts (stream payloads) by their hex.
        length: Hex digits kept (None: all 64); a store keyed by one length keeps it.
        omitted_at_default: (dotted path in the payload, default value) of fields left out
            of the payload when they hold that default: fields added after keys were written,
            so that the keys of everything made with the default stay what they were.
        why: Why this kind's encoding, length and omissions are what they are.
    """

    kind: str
    schema: int
    encoding: Encoding
    length: int | None
    omitted_at_default: tuple[tuple[str, Any], ...] = ()
    why: str = ""

    def key(self, payload: Any) -> str:
        """The key of `payload` under this rule.

        Args:
            payload: JSON data (dicts, lists, strings, numbers, booleans, None); for a
                "stream" rule, a sequence of parts, each `bytes` or JSON data.

        Returns:
            The key: `length` lowercase hex digits of a sha256.
        """
        payload = self._without_defaults(payload)
        sha = hashlib.sha256()
        if self.schema >= 2:
            sha.update(_compact({"kind": self.kind, "schema": self.schema}).encode())
            sha.update(b"\n")
            sha.update(_compact(_hexed(payload)).encode())
        elif self.encoding == "stream":
            for part in payload:
                sha.update(part if isinstance(part, bytes) else _spaced(part).encode())
        elif self.encoding == "json-spaced":
            sha.update(_spaced(payload).encode())
        else:
            sha.update(_compact(payload).encode())
        return sha.hexdigest()[:self.length]

    def _without_defaults(self, payload: Any) -> Any:
        """`payload` less the fields `omitted_at_default` names where they hold the default."""
        if not self.omitted_at_default or not isinstance(payload, Mapping):
            return payload
        payload = copy.deepcopy(dict(payload))
        for dotted, default in self.omitted_at_default:
            *path, last = dotted.split(".")
            node = payload
            for name in path:
                node = node.get(name) if isinstance(node, dict) else None
            if isinstance(node, dict) and last in node and node[last] == default:
                del node[last]
        return payload


def _compact(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _spaced(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True)


def _hexed(payload: Any) -> Any:
    """A stream payload as JSON data: bytes parts as {"bytes": hex} (schema >= 2 only)."""
    if isinstance(payload, bytes):
        return {"bytes": payload.hex()}
    if isinstance(payload, Sequence) and not isinstance(payload, str):
        return [_hexed(part) for part in payload]
    return payload


# A Monte-Carlo kernel's BatchNorm mode joined payloads that already keyed stores and caches:
# left out at its default, the kernels and V(f|S) of every spec written before it keep their
# keys (the default, 'eval', is what they were computed with).
_BATCHNORM_ADDED_LATER = ("mc_batchnorm was added after these keys were written; 'eval', its "
                          "default, is what they were computed with, so it is left out there")

# The data order of training joined the specs after their keys were written.
_ORDER_ADDED_LATER = (("train.order", "shuffled"),)
_ORDER_WHY = ("; train.order was added after these keys were written: 'shuffled', its default, "
              "is how their runs trained, so it is left out there")

_RULES = (
    KeyRule("spec", 1, "json-compact", 16, _ORDER_ADDED_LATER,
            why="a sweep spec's protocol (ExperimentSpec.spec_hash): the store's spec_hash"
                + _ORDER_WHY),
    KeyRule("run-config", 1, "json-compact", 16,
            why="a sweep run's settings (ExperimentSpec.config_hash): the runs' config_hash"),
    KeyRule("kernel", 1, "json-spaced", 16, (("mc_batchnorm", DEFAULT_BATCHNORM),),
            why="a sweep's NNGP kernel in OUT/cache/kernel-<key>.npy; "
                + _BATCHNORM_ADDED_LATER),
    KeyRule("mc-draws", 1, "json-spaced", 16,
            why="a sweep's Monte-Carlo draws in OUT/cache/mc-draws-<key>.pt (mc_batchnorm "
                "always in: the key was made after it)"),
    KeyRule("ensemble-checkpoint", 1, "json-spaced", 16,
            why="an ensemble's training progress in OUT/cache/ensemble-<key>.pt: its members' "
                "run keys and config hashes"),
    KeyRule("collected-run", 1, "stream", 16,
            why="a run directory gathered by flatvol collect: the bytes of its run.json"),
    KeyRule("data", 1, "stream", 16,
            why="TaskData.fingerprint: task, classes, then each split's shapes and bytes"),
    KeyRule("ensemble-training", 1, "stream", None,
            why="what fixes an ensemble's training (resumable fingerprint: all 64 digits)"),
    KeyRule("mc-draws-sequence", 1, "stream", None,
            why="what fixes a Monte-Carlo check's draws (resumable fingerprint: all 64 "
                "digits)"),
    KeyRule("sgd-vs-bayes-spec", 1, "json-compact", 12,
            (*_ORDER_ADDED_LATER, ("resample", None)),
            why="an sgd-vs-bayes experiment in the store; 12 digits, the grid stores' keys"
                + _ORDER_WHY + "; [resample] was added later too, left out where absent"),
    KeyRule("sgd-vs-bayes-sample", 1, "json-compact", 12,
            why="what fixes an sgd-vs-bayes trained network; 12 digits, the stores' keys"),
    KeyRule("sgd-vs-bayes-volume", 1, "json-compact", 12,
            (("volume.mc_batchnorm", DEFAULT_BATCHNORM),),
            why="what fixes an sgd-vs-bayes V(f|S); 12 digits, the stores' keys; "
                + _BATCHNORM_ADDED_LATER),
    KeyRule("sgd-vs-bayes-posterior", 2, "json-compact", 12,
            why="what fixes P_B(f|S) on one draw of E: the volume key, the posterior, the "
                "draw's points and the sampler's settings; 12 digits, the stores' keys"),
)

# The current rule of each kind of key.
KEY_RULES: dict[str, KeyRule] = {rule.kind: rule for rule in _RULES}
# Earlier rules of a kind, (kind, schema) -> rule, kept for a one-time migration of what was
# keyed with them (none yet: every kind is at schema 1).
LEGACY_RULES: dict[tuple[str, int], KeyRule] = {}


def digest(kind: str, payload: Any, *, schema: int | None = None) -> str:
    """The key of `payload` as a `kind` key (`KEY_RULES[kind]`, or an earlier schema's rule).

    Args:
        kind: What is keyed: a name in KEY_RULES.
        payload: What fixes it: JSON data, or for a "stream" kind a sequence of `bytes` and
            JSON parts.
        schema: The rule's schema version; None, the kind's current one. An earlier one
            computes the keys that a migration looks up.

    Returns:
        The key, the rule's `length` lowercase hex digits.

    Raises:
        KeyError: an unknown kind, or a schema the kind never had (a programming error).
    """
    rule = KEY_RULES[kind]
    if schema is not None and schema != rule.schema:
        rule = LEGACY_RULES[(kind, schema)]
    return rule.key(payload)
