"""A small synthetic question-answer preference dataset, built from templates (``data.path=demo_qa``).

The offline stand-in for ranked community answers (a Stack-Exchange-style pipeline: SFT on the
preferred answers, a reward model on the ranked pairs, PPO on the questions). Every row is one
question with a correct, helpful answer (``chosen``) and a worse one (``rejected``): half of the
rejected answers are wrong in the same sentence form (a near-miss number, another country's
capital, a wrong conversion factor), half are unhelpful replies that dodge the question.

Question families, each answered in one sentence:

* capitals: ``What is the capital of France?`` -> ``The capital of France is Paris.``
* arithmetic: sums, differences and products of small numbers: ``What is 7 plus 5?``
* unit conversions: ``How many centimeters are in 3 meters?``
* opposites: ``What is the opposite of hot?``

Rows are formatted as ``prompt = "Question: <q>\\nAnswer:"`` and the answers start with a space,
so prompt + answer reads as one text. Columns: ``prompt``, ``chosen``, ``rejected`` and
``answer`` (the bare correct answer, e.g. ``Paris``, for a reward function that checks it).

Fully deterministic: the same rows on every machine. 10% of the questions of each family are
held out as a ``validation`` split (no question is in both splits).
"""

from __future__ import annotations

import random
from functools import lru_cache

import datasets

DEMO_QA = "demo_qa"
SEED = 0
VAL_FRACTION = 0.1

CAPITALS = {
    "Argentina": "Buenos Aires",
    "Australia": "Canberra",
    "Austria": "Vienna",
    "Belgium": "Brussels",
    "Brazil": "Brasilia",
    "Canada": "Ottawa",
    "Chile": "Santiago",
    "China": "Beijing",
    "Cuba": "Havana",
    "Denmark": "Copenhagen",
    "Egypt": "Cairo",
    "Finland": "Helsinki",
    "France": "Paris",
    "Germany": "Berlin",
    "Greece": "Athens",
    "Hungary": "Budapest",
    "India": "New Delhi",
    "Ireland": "Dublin",
    "Italy": "Rome",
    "Japan": "Tokyo",
    "Kenya": "Nairobi",
    "Mexico": "Mexico City",
    "Norway": "Oslo",
    "Peru": "Lima",
    "Poland": "Warsaw",
    "Portugal": "Lisbon",
    "Russia": "Moscow",
    "Spain": "Madrid",
    "Sweden": "Stockholm",
    "Thailand": "Bangkok",
    "Turkey": "Ankara",
    "the United Kingdom": "London",
    "the United States": "Washington",
}
# (larger unit, smaller unit, how many smaller units make one larger unit)
CONVERSIONS = (
    ("meters", "centimeters", 100),
    ("kilometers", "meters", 1000),
    ("kilograms", "grams", 1000),
    ("liters", "milliliters", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("days", "hours", 24),
    ("weeks", "days", 7),
    ("feet", "inches", 12),
    ("years", "months", 12),
)
SINGULAR = {"feet": "foot"}  # the one irregular plural; the others drop their "s"
OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "fast": "slow",
    "happy": "sad",
    "light": "dark",
    "old": "young",
    "early": "late",
    "full": "empty",
    "open": "closed",
    "strong": "weak",
    "high": "low",
    "hard": "soft",
    "rich": "poor",
    "wet": "dry",
    "loud": "quiet",
    "thick": "thin",
    "clean": "dirty",
    "true": "false",
    "up": "down",
    "win": "lose",
}
UNHELPFUL = (
    "I don't know.",
    "Why do you want to know?",
    "Look it up yourself.",
    "That is a hard question.",
    "Sorry, I cannot help with that.",
    "Nobody knows that.",
    "Ask someone else.",
    "It depends.",
)
_OPERATIONS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}

# One question before rendering: (question, correct sentence, wrong sentence, bare answer).
_Item = tuple[str, str, str, str]


def format_prompt(question: str) -> str:
    """The prompt the policy sees for ``question`` (the answer follows after a space)."""
    return f"Question: {question}\nAnswer:"


def _capitals(rng: random.Random) -> list[_Item]:
    items = []
    cities = list(CAPITALS.values())
    for country, city in CAPITALS.items():
        wrong = rng.choice([c for c in cities if c != city])
        sentence = "The capital of {} is {}.".format
        items.append(
            (
                f"What is the capital of {country}?",
                sentence(country, city),
                sentence(country, wrong),
                city,
            )
        )
    return items


def _arithmetic(rng: random.Random) -> list[_Item]:
    items = []
    for name, operation in _OPERATIONS.items():
        top = 12 if name == "times" else 20
        for a in range(2, top + 1):
            for b in range(2, top + 1):
                if name == "minus" and b >= a:
                    continue  # non-negative differences only
                result = operation(a, b)
                wrong = result + rng.choice((-2, -1, 1, 2, 10))
                sentence = f"{a} {name} {b} is {{}}.".format
                items.append(
                    (
                        f"What is {a} {name} {b}?",
                        sentence(result),
                        sentence(wrong),
                        str(result),
                    )
                )
    return items


def _conversions(rng: random.Random) -> list[_Item]:
    items = []
    for large, small, factor in CONVERSIONS:
        for n in range(1, 13):
            # A plausible mistake: a neighbouring factor (x10 for x100), or off by one unit.
            wrong = n * rng.choice([f for f in (10, 12, 24, 60, 100, 1000) if f != factor])
            one = SINGULAR.get(large, large[:-1]) if n == 1 else large  # "1 foot", "3 feet"
            sentence = f"There are {{}} {small} in {n} {one}.".format
            items.append(
                (
                    f"How many {small} are in {n} {one}?",
                    sentence(n * factor),
                    sentence(wrong),
                    str(n * factor),
                )
            )
    return items


def _opposites(rng: random.Random) -> list[_Item]:
    items = []
    pairs = list(OPPOSITES.items())
    pairs += [(b, a) for a, b in OPPOSITES.items()]
    others = [word for pair in pairs for word in pair]
    for word, opposite in pairs:
        wrong = rng.choice([w for w in others if w not in (word, opposite)])
        sentence = f"The opposite of {word} is {{}}.".format
        items.append(
            (
                f"What is the opposite of {word}?",
                sentence(opposite),
                sentence(wrong),
                opposite,
            )
        )
    return items


@lru_cache(maxsize=1)
def build_demo_qa() -> datasets.DatasetDict:
    """The demo QA preference pairs (see the module docstring), built once per process.

    Returns:
        ``DatasetDict`` with ``train`` (762 rows) and ``validation`` (84 rows) splits; columns
        ``prompt``, ``chosen``, ``rejected``, ``answer`` (all strings).
    """
    rng = random.Random(SEED)
    splits: dict[str, list[dict[str, str]]] = {"train": [], "validation": []}
    for family in (_capitals, _arithmetic, _conversions, _opposites):
        items = family(rng)
        rng.shuffle(items)
        n_val = round(len(items) * VAL_FRACTION)
        for index, (question, correct, wrong, answer) in enumerate(items):
            # Rejected: a wrong answer or a dodge, half each (decided per question).
            rejected = wrong if rng.random() < 0.5 else rng.choice(UNHELPFUL)
            row = {
                "prompt": format_prompt(question),
                "chosen": " " + correct,
                "rejected": " " + rejected,
                "answer": answer,
            }
            splits["validation" if index < n_val else "train"].append(row)
    features = datasets.Features(
        {name: datasets.Value("string") for name in ("prompt", "chosen", "rejected", "answer")}
    )
    result = {}
    for name, rows in splits.items():
        rng.shuffle(rows)  # mix the families
        result[name] = datasets.Dataset.from_list(rows, features=features)
    return datasets.DatasetDict(result)
