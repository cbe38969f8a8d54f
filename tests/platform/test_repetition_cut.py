"""The worker stops a reply that has started repeating itself (small models loop)."""
import pytest

from inference.tasks import repetition_cut


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I'm ready to assist you.\n\nI'm ready to assist you.\n\nI'm re", "I'm ready to assist you."),
        ("We open at 9am. Bring your bike. We open at 9am. Bring", "We open at 9am. Bring your bike."),
        ("The answer to your question is:\nThe answer to your question is:\nThe", "The answer to your question is:"),
    ],
)
def test_it_cuts_a_reply_at_the_first_repeat(text, expected):
    assert repetition_cut(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "We are open Monday to Friday, 9am to 6pm. On Saturdays we open at 10am.",
        "Yes. Yes. Sure thing.",  # short pieces may repeat
        "A tune-up is $79. A tune-up is $79",  # the last piece may still be growing: not a finished repeat
    ],
)
def test_it_leaves_a_reply_without_finished_repeats_alone(text):
    assert repetition_cut(text) is None
