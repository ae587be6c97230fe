"""A TTL stream's expiry is judged as of when a request arrived, and its slide stamped when the work is done."""

from datetime import timedelta

import pytest
from django.utils import timezone

from durable import storage
from durable.models import Stream
from tests.support import factories

pytestmark = pytest.mark.django_db

TTL = timedelta(seconds=2)


def expired_stream() -> Stream:
    """A 2 s TTL stream last touched a minute ago: long expired by now, whatever the machine's pace."""
    return Stream.objects.create(
        owner=factories.user(), path="ttl/one", content_type="text/plain", ttl_s=2,
        touched_at=timezone.now() - timedelta(minutes=1),
    )


def test_a_request_that_arrived_before_expiry_is_served_though_handled_after():
    stream = expired_stream()
    before = timezone.now()
    chunk = storage._read(stream.pk, 0, touch=True, at=stream.touched_at + TTL / 2)
    assert chunk is not None and chunk.tail == 0
    # The slide starts from the read itself, not from its arrival.
    slid = Stream.objects.get(pk=stream.pk)
    assert slid.touched_at >= before and not slid.is_expired(before)


def test_a_request_that_arrived_after_expiry_finds_nothing_and_the_stream_is_gone():
    stream = expired_stream()
    assert storage._find(stream.owner_id, stream.path, at=stream.touched_at + TTL * 1.5) is None
    assert not Stream.objects.filter(pk=stream.pk).exists()
