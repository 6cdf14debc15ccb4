"""A deterministic corpus of agent-memory statements and the questions that find them.

Data, not measurement: the texts are made from templates so that any size can be
had offline and reproducibly, and each question names the fact it should find,
so retrieval quality is measurable (the ``expected`` index of :class:`Question`).
They go through the real embedder and the real stores like any user text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_PEOPLE = ["Alice", "Bob", "Carmen", "Deepak", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
           "Kemi", "Luca", "Maya", "Nikolai", "Olu", "Priya", "Quentin", "Rosa", "Sven", "Tara"]
_FACTS: list[tuple[str, str, list[str]]] = [
    # (statement template, question template, values)
    ("{p} loves {v} and talks about it all the time.", "What does {p} love?",
     ["hiking in the Alps", "baking sourdough bread", "playing chess online", "salsa dancing",
      "restoring old motorcycles", "birdwatching at dawn", "painting watercolour landscapes"]),
    ("{p} is allergic to {v}.", "What is {p} allergic to?",
     ["peanuts", "shellfish", "cat hair", "penicillin", "pollen", "gluten", "bee stings"]),
    ("{p} works as {v}.", "What is {p}'s job?",
     ["a nurse at the city hospital", "a software engineer at a bank", "a high-school teacher",
      "a freelance photographer", "an airline pilot", "a marine biologist", "a pastry chef"]),
    ("{p} has a pet {v}.", "What pet does {p} have?",
     ["golden retriever named Max", "grey cat called Pixel", "parrot that says hello",
      "tortoise older than the house", "pair of goldfish", "rabbit named Clover", "border collie"]),
    ("{p} is planning a trip to {v} next summer.", "Where is {p} travelling next summer?",
     ["Japan to see Kyoto's temples", "Patagonia for trekking", "Iceland to see the northern lights",
      "Morocco and the Sahara", "New Zealand's south island", "the Amalfi coast", "Peru and Machu Picchu"]),
    ("{p} prefers {v} in the morning.", "What does {p} drink in the morning?",
     ["black coffee without sugar", "green tea with lemon", "a fruit smoothie", "hot chocolate",
      "sparkling water", "chai with oat milk", "a double espresso"]),
    ("{p}'s favourite book is {v}.", "Which book does {p} like best?",
     ["a history of the Roman empire", "a science-fiction saga about Mars", "a cookbook of Thai recipes",
      "a biography of Marie Curie", "a collection of Japanese poems", "a detective novel set in Oslo",
      "a guide to mountain survival"]),
    ("{p} recently started learning {v}.", "What has {p} started learning?",
     ["the violin", "Mandarin Chinese", "to sail a dinghy", "woodworking", "to code in Rust",
      "pottery on a wheel", "rock climbing"]),
]


@dataclass(frozen=True)
class Question:
    """A question whose answer is the corpus statement at index ``expected``."""

    text: str
    user_id: str
    expected: int


@dataclass(frozen=True)
class Corpus:
    """Statements with their owners, and questions pointing at them."""

    texts: list[str]
    user_ids: list[str]
    questions: list[Question]


def memory_corpus(n: int, *, users: int = 10, seed: int = 0) -> Corpus:
    """``n`` statements spread over ``users`` users, and one question per statement.

    Within a user, each (person, fact kind) pair appears at most once where the
    combinations allow, so every question has one right answer in its user's memories.
    """
    if n < 1 or users < 1:
        raise ValueError("need n >= 1 and users >= 1")
    rng = random.Random(seed)
    texts: list[str] = []
    owners: list[str] = []
    questions: list[Question] = []
    for i in range(n):
        user = f"user-{i % users}"
        slot = i // users
        person = _PEOPLE[slot % len(_PEOPLE)]
        statement, question, values = _FACTS[(slot // len(_PEOPLE)) % len(_FACTS)]
        round_ = slot // (len(_PEOPLE) * len(_FACTS))
        value = values[rng.randrange(len(values))]
        suffix = "" if round_ == 0 else f" ({round_ + 1})"
        texts.append(statement.format(p=person + suffix, v=value))
        owners.append(user)
        questions.append(Question(question.format(p=person + suffix), user, i))
    return Corpus(texts, owners, questions)
