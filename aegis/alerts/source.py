"""Where the healing sensor's alerts come from, per profile: the local inbox, or SQS in production.

Every consumer reads alerts from the inbox (:class:`aegis.alerts.inbox.AlertInbox`);
an :class:`AlertSource` only fills it first.  Locally the receiver (Alertmanager
webhook, SNS) writes the inbox as alerts arrive, so there is nothing to pull.
In production CloudWatch alarms wait in the SQS queue the alerting component
declares (stack output ``alertQueueUrl``), and :meth:`SqsAlertSource.drain`
moves what is waiting into the inbox at the start of each sensor tick.

A drain is bounded, because a sensor tick must be short: receives do not wait
(short polling), no receive starts after ``deadline_s``, at most ``max_messages``
are taken, and each call has short network timeouts and one retry.  What is left
stays on the queue for the next tick.  The guarantees of :func:`aegis.alerts.sqs.pull_once`
hold: a message is deleted only after its alert is committed, a message that is
not an alarm stays for the dead-letter queue.  When the queue cannot be read
(credentials, network, a missing queue) :class:`AlertSourceUnavailable` says
which queue and why; nothing was deleted that is not in the inbox.

No Dagster here: the sensor (or ``aegis alerts pull-sqs``) holds the source.
"""

from __future__ import annotations

import logging
import re
import time
from abc import ABC, abstractmethod
from typing import Any

from aegis.alerts.inbox import AlertInbox
from aegis.alerts.sqs import MAX_MESSAGES, PullResult, pull_once

log = logging.getLogger(__name__)

ENV_QUEUE_URL = "AEGIS_ALERT_QUEUE_URL"  # stack output alertQueueUrl (pipelines/stack_outputs.py)
ENV_REGION = "AEGIS_AWS_REGION"  # stack output primaryRegion
DRAIN_MAX_MESSAGES = 100
DRAIN_DEADLINE_S = 3.0
# Per call: a dead endpoint fails in seconds, not botocore's default 60 s x 5 attempts.
CONNECT_TIMEOUT_S = 2.0
READ_MARGIN_S = 5.0  # read timeout = the receive's wait + this
MAX_ATTEMPTS = 2  # botocore "standard" retries: the first try and one retry
# https://sqs.<region>.amazonaws.com/<account>/<name> (also .com.cn, api.aws) or https://<region>.queue.amazonaws.com/...
_REGION = r"([a-z]{2}(?:-[a-z]+)+-\d+)"
QUEUE_URL_REGION = re.compile(
    rf"^https://(?:sqs[.-]{_REGION}\.(?:amazonaws\.com(?:\.cn)?|api\.aws)"
    rf"|{_REGION}\.queue\.amazonaws\.com(?:\.cn)?)/"
)


class AlertSourceUnavailable(RuntimeError):
    """The alert queue could not be read or written; every message not deleted is still on it.

    ``result`` is what the drain did before the failure (alerts it stored stay
    stored; their messages, if not deleted, come back and are counted once more).
    """

    def __init__(self, queue_url: str, cause: BaseException | str, result: PullResult | None = None) -> None:
        self.queue_url = queue_url
        self.cause = cause if isinstance(cause, str) else describe_error(cause)
        self.result = result if result is not None else PullResult()
        super().__init__(
            f"alert queue {queue_url} is unavailable: {self.cause} "
            f"(stored {self.result.stored} alert(s) before that; undeleted messages stay on the queue)"
        )


class AlertSourceConfigError(ValueError):
    """The profile needs settings the environment does not have (names every one missing)."""


def describe_error(exc: BaseException) -> str:
    """A one-line cause: the AWS error code and message, else the exception type and text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        err = response["Error"]
        return f"{err.get('Code', type(exc).__name__)}: {err.get('Message', exc)}"
    return f"{type(exc).__name__}: {exc}"


def queue_url_region(queue_url: str) -> str | None:
    """The region in an AWS queue URL; None for another endpoint's URL (moto, LocalStack)."""
    m = QUEUE_URL_REGION.match(queue_url)
    return (m.group(1) or m.group(2)) if m else None


class AlertSource(ABC):
    """Fills the inbox from wherever alerts wait before a consumer reads it."""

    name: str = "alerts"

    @abstractmethod
    def drain(
        self,
        inbox: AlertInbox,
        *,
        max_messages: int = DRAIN_MAX_MESSAGES,
        deadline_s: float = DRAIN_DEADLINE_S,
    ) -> PullResult:
        """Move what is waiting into ``inbox``, within ``max_messages`` and ``deadline_s``."""


class LocalAlertSource(AlertSource):
    """The local profile: the receiver writes the inbox as alerts arrive, so a drain has nothing to do."""

    name = "local inbox"

    def drain(
        self,
        inbox: AlertInbox,
        *,
        max_messages: int = DRAIN_MAX_MESSAGES,
        deadline_s: float = DRAIN_DEADLINE_S,
    ) -> PullResult:
        return PullResult(stopped="empty")


class SqsAlertSource(AlertSource):
    """CloudWatch alarms from the production SQS queue.

    ``endpoint_url`` None: boto3's own resolution, so the standard
    ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_SQS`` environment variables (and the
    AWS config file) apply; credentials come from boto3's usual chain (IRSA in
    the cluster).  The client's region is the one in an AWS queue URL when there
    is one (the queue lives in the control region, which a DR failover moves
    away from the primary region), else ``region``.  ``wait_s`` > 0 long-polls
    (``aegis alerts pull-sqs``); a sensor keeps the default 0.
    """

    def __init__(
        self, queue_url: str, region: str, endpoint_url: str | None = None, *, wait_s: int = 0
    ) -> None:
        if not queue_url.strip():
            raise AlertSourceConfigError("the alert queue URL is empty")
        if not 0 <= wait_s <= 20:
            raise ValueError(f"wait_s must be 0-20 s (SQS's limit), not {wait_s}")
        url_region = queue_url_region(queue_url)
        if url_region and region and url_region != region:
            log.info("alert queue %s is in %s, not %s: using %s", queue_url, url_region, region, url_region)
        self.queue_url = queue_url.strip()
        self.region = url_region or region
        if not self.region:
            raise AlertSourceConfigError(f"no AWS region for the alert queue {queue_url}")
        self.endpoint_url = endpoint_url
        self.wait_s = wait_s
        self.name = f"SQS {self.queue_url}"
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The boto3 SQS client, made on first use (a bad endpoint URL is AlertSourceUnavailable)."""
        if self._client is None:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError

            config = Config(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=self.wait_s + READ_MARGIN_S,
                retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
            )
            try:  # a session of its own: boto3's default session is not safe to share between threads
                self._client = boto3.session.Session().client(
                    "sqs", region_name=self.region, endpoint_url=self.endpoint_url, config=config
                )
            except (BotoCoreError, ValueError) as exc:
                raise AlertSourceUnavailable(self.queue_url, exc) from exc
        return self._client

    def drain(
        self,
        inbox: AlertInbox,
        *,
        max_messages: int = DRAIN_MAX_MESSAGES,
        deadline_s: float = DRAIN_DEADLINE_S,
    ) -> PullResult:
        """Receive, store and delete batches of up to 10 until the queue answers empty,
        ``max_messages`` were received, or ``deadline_s`` has passed.

        At least one receive is made (``deadline_s=0``: exactly one).  The deadline
        bounds when a receive may start; one that started is bounded by the
        client's timeouts.  Inbox errors propagate as they are (nothing was deleted).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        end = time.monotonic() + max(0.0, deadline_s)
        total = PullResult()
        try:
            client = self.client
            while True:
                before = total.received
                want = min(MAX_MESSAGES, max_messages - total.received)
                pull_once(
                    client, self.queue_url, inbox, self.region, self.wait_s, max_messages=want, into=total
                )
                if total.received == before:
                    total.stopped = "empty"
                    break
                if total.received >= max_messages:
                    total.stopped = "max_messages"
                    break
                if time.monotonic() >= end:
                    total.stopped = "deadline"
                    break
        except (BotoCoreError, ClientError) as exc:
            raise AlertSourceUnavailable(self.queue_url, exc, total) from exc
        return total
