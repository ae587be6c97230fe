"""A TTL stream's expiry is judged as of when a request arrived, and its slide stamped when the work is done."""

from datetime import timedelta

import pytest
from django.utils import timezone

from durable import storage
from durable.models import Stream
from tests.support import factories

pytestmark = pytest.mark.django_db


def stream_touched(seconds_ago: float, ttl_s: int = 2) -> Stream:
    owner = factories.user()
    return Stream.objects.create(
        owner=owner, path="ttl/one", content_type="text/plain", ttl_s=ttl_s,
        touched_at=timezone.now() - timedelta(seconds=seconds_ago),
    )


def test_a_request_that_arrived_before_expiry_is_served_though_handled_after():
    stream = stream_touched(3)  # Expired 1 s ago: a read that arrived 1.5 s ago came in time.
    arrived = timezone.now() - timedelta(seconds=1.5)
    before = timezone.now()
    chunk = storage._read(stream.pk, 0, touch=True, at=arrived)
    assert chunk is not None and chunk.tail == 0
    # The slide starts from the read itself, not from its arrival: the stream now lives 2 s more.
    assert Stream.objects.get(pk=stream.pk).touched_at >= before
    assert storage._find(stream.owner_id, stream.path) is not None


def test_a_request_that_arrived_after_expiry_finds_nothing_and_the_stream_is_gone():
    stream = stream_touched(3)
    assert storage._find(stream.owner_id, stream.path, at=timezone.now() - timedelta(seconds=0.5)) is None
    assert not Stream.objects.filter(pk=stream.pk).exists()
