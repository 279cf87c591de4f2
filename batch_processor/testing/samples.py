"""A realistic, reproducible sample of support conversations for the demo and the benchmarks.

Each conversation is a list of ``{role, content}`` messages between a customer and an agent,
across the support taxonomy, in a few languages, with about 5 % exact duplicates and a few bad
documents (missing, empty or non-text messages, and one oversized conversation) so that a demo
run shows every path: classified, truncated, failed with a DATA reason.
"""

from __future__ import annotations

import random
from typing import Any

CUSTOMER_LINES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for my subscription this month, invoice {n}.",
        "My bill went up by {amount} dollars without any notice. Why?",
        "The payment for order {n} failed but my credit card was still charged.",
    ],
    "technical_issue": [
        "The app crashes every time I open the settings page since the last update.",
        "My internet connection keeps dropping every evening, the router lights go red.",
        "I get error {n} when I try to upload a file. It is not working at all.",
    ],
    "account_access": [
        "I'm locked out of my account after resetting my password, please help.",
        "The verification code for 2FA never arrives, I cannot log in.",
        "I forgot my username and the password reset link has expired.",
    ],
    "shipping_delivery": [
        "My package never arrived, the tracking number {n} has not moved in a week.",
        "The courier says delivered but there is no package at my door.",
        "My order {n} was delayed again. When will it be shipped?",
    ],
    "refund_return": [
        "The blender arrived damaged. I want a refund, not an exchange.",
        "I returned the shoes two weeks ago and still have no money back.",
        "How do I return a defective charger bought on {date}?",
    ],
    "cancellation": [
        "Please cancel my subscription at the end of this billing period.",
        "I want to close my account and delete my data.",
        "How do I stop my subscription? I can't find the cancel button.",
    ],
    "product_inquiry": [
        "Does it support USB-C charging? And is it compatible with my older model?",
        "What is the difference between the Basic and the Pro plan?",
        "Is the large size available in blue before {date}?",
    ],
    "complaint": [
        "This is the third time I'm writing. Your support is terrible and the agent was rude.",
        "Absolutely unacceptable service. I want to speak to a manager right now!",
        "Worst experience ever, I am very disappointed with how this was handled.",
    ],
    "feature_request": [
        "It would be great if the app had a dark mode. Please add it!",
        "Suggestion: could you add an export to CSV option in the reports?",
        "I wish I could schedule reports weekly. Feature request from our whole team.",
    ],
    "general_inquiry": [
        "Hi, what are your opening hours on public holidays?",
        "Hello, I would like to know where your offices are located.",
        "Thanks for the quick help yesterday, everything works great now!",
    ],
}

OTHER_LANGUAGES = [
    "Hola, me cobraron dos veces este mes y necesito un reembolso lo antes posible.",
    "Bonjour, mon colis n'est jamais arrivé et le suivi ne bouge plus depuis une semaine.",
    "Hallo, ich kann mich nicht mehr in mein Konto einloggen, das Passwort funktioniert nicht.",
    "Olá, o aplicativo fecha sozinho toda vez que abro as configurações.",
]

AGENT_LINES = [
    "Thank you for reaching out. I'm sorry for the trouble, let me look into this for you.",
    "I understand how frustrating this is. Could you confirm the email on your account?",
    "Thanks for your patience. I've escalated this to the right team.",
]

FOLLOW_UPS = [
    "Thanks, I hope this gets fixed quickly.",
    "This is urgent, I need it solved today.",
    "Ok, waiting for your answer.",
    "I've already sent that twice!!!",
]

CHANNELS = ["email", "chat", "phone", "web_form", "social"]


def _conversation(rng: random.Random, category: str, index: int) -> list[dict[str, str]]:
    opener = rng.choice(CUSTOMER_LINES[category]).format(
        n=rng.randint(10_000, 99_999),
        amount=rng.randint(5, 60),
        date=f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
    )
    messages = [
        {"role": "customer", "content": opener},
        {"role": "agent", "content": rng.choice(AGENT_LINES)},
    ]
    if rng.random() < 0.6:
        messages.append({"role": "customer", "content": rng.choice(FOLLOW_UPS)})
    return messages


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
    """``count`` source documents: conversations, ~5 % duplicates, a few bad ones, shuffled."""
    rng = random.Random(seed)
    bad = _bad_documents()[: max(0, min(6, count // 50))]
    docs: list[dict[str, Any]] = []
    categories = list(CUSTOMER_LINES)
    while len(docs) < count - len(bad):
        index = len(docs)
        if docs and rng.random() < 0.05:
            original = rng.choice(docs)
            docs.append({**original, "customer_id": f"C{rng.randint(1000, 9999)}"})
            continue
        if rng.random() < 0.06:
            messages = [{"role": "customer", "content": rng.choice(OTHER_LANGUAGES)}]
        else:
            messages = _conversation(rng, rng.choice(categories), index)
        docs.append(
            {
                "messages": messages,
                "subject": messages[0]["content"][:60],
                "channel": rng.choice(CHANNELS),
                "customer_id": f"C{rng.randint(1000, 9999)}",
                "priority": rng.choice(["low", "normal", "normal", "high"]),
            }
        )
    docs.extend(bad)
    rng.shuffle(docs)
    return docs
