"""A realistic, reproducible sample of support conversations for the demo and the benchmarks.

Each conversation is a list of ``{role, content}`` messages between a customer and an agent
(sometimes greeted first, sometimes turned around by the agent), across the support taxonomy,
in a few languages, with the labels a person would give its customer, about 5 % exact
duplicates and a few bad documents (missing, empty or non-text messages, and one oversized
conversation) so that a demo run shows every path: classified, truncated, failed with a DATA
reason.
"""

from __future__ import annotations

import random
from typing import Any

#: Customer openers by category, each with the sentiment a person would give it.
CUSTOMER_LINES: dict[str, list[tuple[str, str]]] = {
    "billing": [
        ("I was charged twice for my subscription this month, invoice {n}.", "negative"),
        ("My bill went up by {amount} dollars without any notice. Why?", "negative"),
        ("Can I pay my invoice {n} by bank transfer instead of credit card?", "neutral"),
    ],
    "technical_issue": [
        ("The app crashes every time I open the settings page since the last update.", "negative"),
        ("My internet keeps dropping every evening, the router lights go red.", "negative"),
        ("I get error {n} when I try to upload a file. It is not working at all.", "negative"),
    ],
    "account_access": [
        ("I'm locked out of my account after resetting my password, please help.", "negative"),
        ("The verification code for 2FA never arrives, I cannot log in.", "negative"),
        ("How do I change the email address I use to log in?", "neutral"),
    ],
    "shipping_delivery": [
        ("My package never arrived, tracking number {n} has not moved in a week.", "negative"),
        ("The courier says delivered but there is no package at my door.", "negative"),
        ("Can I change the delivery address of order {n} before it ships?", "neutral"),
    ],
    "refund_return": [
        ("The blender arrived damaged. I want a refund, not an exchange.", "negative"),
        ("I returned the shoes two weeks ago and still have no money back.", "negative"),
        ("How do I return a charger I bought on {date}? It is the wrong model.", "neutral"),
    ],
    "cancellation": [
        ("Please cancel my subscription at the end of this billing period.", "neutral"),
        ("I want to close my account and delete my data.", "neutral"),
        ("I've tried to cancel three times and you keep charging me. Cancel it now!", "negative"),
    ],
    "product_inquiry": [
        ("Does it support USB-C charging? Is it compatible with my older model?", "neutral"),
        ("What is the difference between the Basic and the Pro plan?", "neutral"),
        ("Is the large size available in blue before {date}?", "neutral"),
    ],
    "complaint": [
        (
            "This is the third time I'm writing. Your support is terrible and the agent was rude.",
            "negative",
        ),
        ("Absolutely unacceptable service. I want to speak to a manager right now!", "negative"),
        ("Worst experience ever, I am very disappointed with how this was handled.", "negative"),
    ],
    "feature_request": [
        ("It would be great if the app had a dark mode. Please add it!", "positive"),
        ("Suggestion: could you add an export to CSV option in the reports?", "neutral"),
        ("Love the new editor! Could you add weekly scheduled reports too?", "positive"),
    ],
    "general_inquiry": [
        ("Hi, what are your opening hours on public holidays?", "neutral"),
        ("Hello, I would like to know where your offices are located.", "neutral"),
        ("Thanks for the quick help yesterday, everything works great now!", "positive"),
    ],
}

#: Messages in other languages: (text, category, sentiment).
OTHER_LANGUAGES = [
    (
        "Hola, me cobraron dos veces este mes y necesito un reembolso lo antes posible.",
        "billing",
        "negative",
    ),
    (
        "Bonjour, mon colis n'est jamais arrivé et le suivi ne bouge plus depuis une semaine.",
        "shipping_delivery",
        "negative",
    ),
    (
        "Hallo, ich kann mich nicht mehr in mein Konto einloggen, das Passwort funktioniert nicht.",
        "account_access",
        "negative",
    ),
    (
        "Olá, o aplicativo fecha sozinho toda vez que abro as configurações.",
        "technical_issue",
        "negative",
    ),
]

GREETINGS = [
    "Hi, thanks for contacting support! How can I help you today?",
    "Hello! Thank you for reaching out, I'm happy to help.",
]

AGENT_LINES = [
    "Thank you for reaching out. I'm sorry for the trouble, let me look into this for you.",
    "I understand how frustrating this is. Could you confirm the email on your account?",
    "Thanks for your patience. I've escalated this to the right team.",
]

#: The customer's follow-ups, by the tone of the conversation so far.
FOLLOW_UPS = {
    "negative": [
        "This is urgent, I need it solved today.",
        "I've already sent that twice!!!",
        "Ok, waiting for your answer.",
    ],
    "neutral": [
        "Ok, thanks.",
        "Sure, it is the one on the account.",
        "Ok, waiting for your answer.",
    ],
    "positive": ["Thanks a lot!", "Great, thank you!"],
}

#: An agent who solves the problem, and a customer who says so (the conversation improves).
SOLVED = "Good news: I've fixed it on our side and refunded the extra charge. Can you check?"
THANKED = [
    "Yes, it works now. Thank you so much, great help!",
    "Perfect, all sorted. Thanks a lot for your help!",
]

CHANNELS = ["email", "chat", "phone", "web_form", "social"]


def _conversation(
    rng: random.Random, category: str
) -> tuple[list[dict[str, str]], dict[str, str | None]]:
    """A conversation of ``category`` and the labels a person would give its customer."""
    opener, sentiment = rng.choice(CUSTOMER_LINES[category])
    opener = opener.format(
        n=rng.randint(10_000, 99_999),
        amount=rng.randint(5, 60),
        date=f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
    )
    messages = [{"role": "customer", "content": opener}]
    if rng.random() < 0.3:
        messages.insert(0, {"role": "agent", "content": rng.choice(GREETINGS)})
    expected: dict[str, str | None] = {"category": category, "sentiment": sentiment, "trend": None}
    roll = rng.random()
    if sentiment == "negative" and roll < 0.25:
        # Turned around: the agent solves it and the customer says so.
        messages.append({"role": "agent", "content": SOLVED})
        messages.append({"role": "customer", "content": rng.choice(THANKED)})
        # How the whole conversation felt is a matter of opinion here: only the trend is judged.
        expected |= {"trend": "improving", "sentiment": None}
        return messages, expected
    messages.append({"role": "agent", "content": rng.choice(AGENT_LINES)})
    if roll < 0.7:
        messages.append({"role": "customer", "content": rng.choice(FOLLOW_UPS[sentiment])})
        expected["trend"] = "steady"
    return messages, expected


def _bad_documents() -> list[dict[str, Any]]:
    return [
        {"subject": "missing messages field", "channel": "email"},
        {"messages": "", "subject": "empty text", "channel": "chat"},
        {"messages": 42, "subject": "number instead of text", "channel": "web_form"},
        {
            "messages": [{"role": "customer", "attachment": "photo.jpg"}],
            "subject": "no text in message",
        },
        {"messages": [], "subject": "empty conversation", "channel": "chat"},
        {
            "messages": [{"role": "customer", "content": "My router keeps failing. " * 1500}],
            "subject": "oversized conversation (truncated, still classified)",
            "channel": "email",
        },
    ]


def sample_conversations(count: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` source documents: conversations, ~5 % duplicates, a few bad ones, shuffled.

    Each conversation carries ``expected``: the labels a person would give its customer
    (category, sentiment, and the trend when the customer spoke twice), which the demo
    compares with what was stored.
    """
    rng = random.Random(seed)
    bad = _bad_documents()[: max(0, min(6, count // 50))]
    docs: list[dict[str, Any]] = []
    categories = list(CUSTOMER_LINES)
    while len(docs) < count - len(bad):
        if docs and rng.random() < 0.05:
            original = rng.choice(docs)
            docs.append({**original, "customer_id": f"C{rng.randint(1000, 9999)}"})
            continue
        if rng.random() < 0.06:
            text, category, sentiment = rng.choice(OTHER_LANGUAGES)
            messages = [{"role": "customer", "content": text}]
            expected: dict[str, str | None] = {
                "category": category,
                "sentiment": sentiment,
                "trend": None,
            }
        else:
            messages, expected = _conversation(rng, rng.choice(categories))
        first = next(m["content"] for m in messages if m["role"] == "customer")
        docs.append(
            {
                "messages": messages,
                "subject": first[:60],
                "channel": rng.choice(CHANNELS),
                "customer_id": f"C{rng.randint(1000, 9999)}",
                "priority": rng.choice(["low", "normal", "normal", "high"]),
                "expected": expected,
            }
        )
    docs.extend(bad)
    rng.shuffle(docs)
    return docs
