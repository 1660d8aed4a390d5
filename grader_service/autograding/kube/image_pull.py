"""Telling a permanent image-pull failure from a transient one, by what the kubelet reports.

While it cannot pull an image, the kubelet sets the container's state to ``waiting`` with a reason
and a message, and retries with a growing back-off (up to 5 minutes): ``ErrImagePull`` with the
runtime's error, then ``ImagePullBackOff``, whose message since Kubernetes 1.32 repeats that error
(``Back-off pulling image "x": ErrImagePull: <error>``; older kubelets say only the first part, so
the last ``ErrImagePull`` message seen is kept for them). ``InvalidImageName`` and
``ErrImageNeverPull`` come without a pull. ``RegistryUnavailable`` and
``SignatureValidationFailed`` are the reasons newer runtimes give for those two cases.

A missing image, a bad name or refused credentials will not fix themselves: waiting only delays
the failure. A registry that times out, answers 5xx or rate-limits may recover. Messages that say
neither are treated as transient: a wrong guess there costs a bounded wait, the other way a
submission that would have been graded.
"""

from __future__ import annotations

import re
from typing import Literal

PullVerdict = Literal["permanent", "transient"]

# Every waiting reason that means "the image is not there yet".
PULL_REASONS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "RegistryUnavailable",
    "SignatureValidationFailed",
    "InvalidImageName",
    "ErrImageNeverPull",
)
# Reasons that are a verdict by themselves.
PERMANENT_REASONS = ("InvalidImageName", "ErrImageNeverPull", "SignatureValidationFailed")
TRANSIENT_REASONS = ("RegistryUnavailable",)

# What registries and runtimes say when trying again may help: timeouts, resets, 5xx, rate limits.
_TRANSIENT = re.compile(
    r"time(d)?[ -]?out|deadline exceeded|temporar|connection (refused|reset)|no route to host|"
    r"\bEOF\b|\b5[0-9][0-9]\b|service unavailable|bad gateway|internal server error|"
    r"toomanyrequests|too many requests|\b429\b|rate limit",
    re.IGNORECASE,
)
# What they say when it will not: the image or tag does not exist, or access is refused.
_PERMANENT = re.compile(
    r"not found|manifest unknown|name unknown|repository does not exist|unauthori[sz]ed|"
    r"authentication required|access denied|pull access denied|denied|forbidden|"
    r"may require authorization|\b40[134]\b|no match for platform|invalid reference format",
    re.IGNORECASE,
)


def pull_verdict(reason: str, message: str) -> PullVerdict:
    """'permanent' or 'transient' for a waiting state whose reason is one of PULL_REASONS."""
    if reason in PERMANENT_REASONS:
        return "permanent"
    if reason in TRANSIENT_REASONS or _TRANSIENT.search(message):
        return "transient"
    if _PERMANENT.search(message):
        return "permanent"
    return "transient"


def pull_error(reason: str, message: str, last_error: str | None) -> str:
    """The runtime's error behind a waiting state: ImagePullBackOff's own, or the last one seen."""
    if reason == "ImagePullBackOff":
        _, sep, detail = message.partition('": ')
        if sep and detail:
            return detail
        return last_error or message
    return message
