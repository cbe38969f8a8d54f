"""Live events are best effort (a channel-layer hiccup is logged, never raised), except the worker's
soft time limit: swallowed there, a reply ran on to the hard limit and the task was redelivered."""
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from channels.layers import InMemoryChannelLayer, channel_layers

from bots import events


class RaisingLayer(InMemoryChannelLayer):
    """The channel layer, failing the way the test says (a stand-in for Redis in trouble)."""

    error: type[BaseException] = ConnectionError

    async def group_send(self, group, message):
        raise self.error("from the layer")


@pytest.fixture
def raising_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.platform.test_events.RaisingLayer"}}
    channel_layers.backends.clear()
    yield RaisingLayer
    channel_layers.backends.clear()


def test_a_layer_in_trouble_is_logged_not_raised(raising_layer, caplog):
    raising_layer.error = ConnectionError
    events.push(1, "reply.delta", delta="Hi")
    assert "live event reply.delta for conversation 1 not pushed" in caplog.text


def test_the_workers_soft_time_limit_gets_through(raising_layer):
    raising_layer.error = SoftTimeLimitExceeded
    with pytest.raises(SoftTimeLimitExceeded):
        events.push(1, "reply.delta", delta="Hi")
