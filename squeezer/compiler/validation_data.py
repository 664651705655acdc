"""The inputs every candidate is checked on: a built-in, task-specific set, or the user's own file.

The built-in texts vary on purpose where quantization hurts most: very short and long inputs, several
languages and scripts, numbers, punctuation, code and URLs. Calibration texts (for static int8) are kept
apart from the validation texts, so a statically quantized candidate is never judged on its own
calibration data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Example:
    """One request's `inputs` and `parameters`, as a client would send them."""

    inputs: Any
    parameters: dict[str, Any] = field(default_factory=dict)


TEXTS: tuple[str, ...] = (
    "Hello world",
    "ok",
    "What?!",
    "The quick brown fox jumps over the lazy dog.",
    "I absolutely loved this movie; the acting was superb and the ending made me cry.",
    "Terrible service. We waited 45 minutes and the food arrived cold.",
    "The meeting is moved to Tuesday, 3:30 pm, room B-214 (second floor).",
    "Sarah Connor met John Smith at the Eiffel Tower in Paris on Monday morning.",
    "Apple Inc. reported revenue of $94.8 billion for Q2 2023, up 5.1% year over year.",
    "Numbers like 42, 3.14159, -17 and 1,000,000 appear in texts; so do e-mails (jane@example.com) and URLs.",
    "Visit https://example.org/docs?page=2&lang=en#install for installation instructions.",
    "def add(a, b):\n    return a + b  # adds two numbers",
    "SELECT name, COUNT(*) FROM users WHERE age > 30 GROUP BY name;",
    "Ceci est une phrase en français, avec des accents : é, è, à, ç.",
    "Das ist ein deutscher Satz über Straßenbahnen und Größenordnungen.",
    "¿Dónde está la biblioteca? Está cerca de la estación de tren.",
    "Москва — столица России, крупнейший город страны.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "北京是中华人民共和国的首都。",
    "مرحبا بالعالم، هذه جملة باللغة العربية.",
    "Γειά σου κόσμε! Αυτή είναι μια ελληνική πρόταση.",
    "Wow!!! 🎉🎉 Best. Day. Ever. 😀",
    "...",
    "The patient was prescribed 500 mg of amoxicillin three times daily for 10 days.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "In 1969, Neil Armstrong and Buzz Aldrin landed on the Moon aboard the Apollo 11 lunar module Eagle.",
    "BREAKING: Markets tumble as central bank raises interest rates by 0.75 percentage points.",
    "lol idk what ur talking about tbh, see u l8r",
    "The mitochondria is the powerhouse of the cell.",
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and arrows "
    "of outrageous fortune, or to take arms against a sea of troubles and by opposing end them.",
    "Machine learning models can be compressed with quantization, pruning and distillation. Quantization maps "
    "floating point weights to low-precision integers, which reduces memory traffic and lets the processor use "
    "faster integer instructions. The accuracy cost depends on the model, the data and the quantization scheme, "
    "so every compressed model must be validated against its full-precision reference before it is deployed. "
    "Sensitive layers, such as embeddings or the last projection, are often kept in floating point.",
    "The committee, having reviewed the proposal in detail over several sessions held between March and June, "
    "concluded that the budget (estimated at EUR 2.4 million, excluding VAT) was insufficient for the planned "
    "scope; it therefore recommended either reducing the number of pilot sites from twelve to eight, or "
    "postponing the second phase until additional funding could be secured from regional partners. "
    "Members from Lyon, Milano and Kraków dissented, arguing that delays would cost more than the shortfall.",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z 0 1 2 3 4 5 6 7 8 9",
    "She said, \"I'll be there at 7\" — but she never came; nobody knows why.",
    "Water boils at 100 °C (212 °F) at sea level.",
    "The stock price of ACME Corp. rose from 12.50 to 13.75 USD within an hour.",
)

CALIBRATION_TEXTS: tuple[str, ...] = (
    "A short greeting.",
    "The weather today is sunny with a light breeze from the west.",
    "Our new product launches next month in Berlin, London and Tokyo.",
    "Please send the report by Friday 5 pm; include figures for 2021, 2022 and 2023.",
    "Les enfants jouent dans le parc pendant que leurs parents discutent.",
    "Die Konferenz findet im Herbst statt und dauert drei Tage.",
    "La economía creció un 2,3 % el año pasado según el instituto nacional.",
    "Этот отчёт описывает результаты эксперимента.",
    "今日はとても良い天気ですね。",
    "The algorithm sorts the list in O(n log n) time and uses O(1) extra memory.",
    "Great phone, terrible battery. Would not buy again!!!",
    "Dr. Maria Lopez joined the hospital in 2019 after working at Stanford for ten years.",
    "The river flows north through three countries before it reaches the sea, carrying sediment that forms a "
    "wide delta where farmers have grown rice for centuries; recent dams have reduced that flow considerably.",
    "import numpy as np; x = np.zeros((3, 4)); print(x.shape)",
    "Tickets cost $25 for adults, $10 for children under 12, and entry is free for seniors.",
    "The board approved the merger on 14 February after a two-hour debate.",
)

QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    ("Who landed on the Moon in 1969?", "In 1969, Neil Armstrong and Buzz Aldrin landed on the Moon aboard Apollo 11."),
    ("How much revenue did Apple report?", "Apple Inc. reported revenue of $94.8 billion for Q2 2023, up 5.1% year over year."),
    ("When is the meeting?", "The meeting is moved to Tuesday, 3:30 pm, in room B-214 on the second floor."),
    ("What does photosynthesis produce?", "Photosynthesis converts light energy into chemical energy stored in glucose."),
    ("Where does Sarah work?", "Sarah works as an engineer at a small robotics company in Lyon, France."),
    ("How long is the treatment?", "The patient was prescribed 500 mg of amoxicillin three times daily for 10 days."),
    ("What temperature does water boil at?", "Water boils at 100 °C (212 °F) at sea level, and lower at altitude."),
    ("Who dissented?", "The committee approved the plan; members from Lyon, Milano and Kraków dissented."),
    ("What is the largest planet?",
     "Jupiter is the largest planet in the Solar System, more than twice as massive as the others combined."),
    ("Quelle est la capitale de l'Allemagne ?", "Berlin est la capitale de l'Allemagne depuis 1990."),
    ("What language is spoken in Brazil?",
     "Brazil is the largest country in South America. Its official language is Portuguese."),
)

MASKED: tuple[str, ...] = (
    "Paris is the {mask} of France.",
    "The quick brown fox jumps over the lazy {mask}.",
    "I drink a cup of {mask} every morning.",
    "She plays the {mask} in an orchestra.",
    "The {mask} is shining and the sky is blue.",
    "He bought a new {mask} to drive to work.",
    "Water boils at 100 degrees {mask}.",
    "The meeting was moved to {mask} afternoon.",
    "My favourite fruit is the {mask}.",
    "They watched a {mask} at the cinema last night.",
    "The doctor gave the patient some {mask}.",
    "Berlin is the capital of {mask}.",
    "Ceci est une {mask} en français.",
    "The price rose by 5 {mask} last year.",
    "Please {mask} the door when you leave.",
    "The cat is sleeping on the {mask}.",
)

ZERO_SHOT_LABELS: tuple[str, ...] = ("politics", "sports", "technology", "health", "finance")


def builtin(task: str, mask_token: str | None = None) -> list[Example]:
    """The built-in validation set for a task, as requests a client would send."""
    if task == "question-answering":
        return [Example({"question": q, "context": c}) for q, c in QUESTIONS]
    if task == "fill-mask":
        if not mask_token:
            raise ValueError("fill-mask validation needs the tokenizer's mask token")
        return [Example(text.format(mask=mask_token)) for text in MASKED]
    if task == "zero-shot-classification":
        return [Example(text, {"candidate_labels": list(ZERO_SHOT_LABELS)}) for text in TEXTS[3:27]]
    return [Example(text) for text in TEXTS]


def digest(examples: list[Example]) -> str:
    """A short hash of a validation set: part of the cache key, and named in the report."""
    from squeezer.artifact import canonical

    return hashlib.sha256(canonical([[e.inputs, e.parameters] for e in examples])).hexdigest()[:16]


def calibration_texts() -> list[str]:
    """Texts to calibrate static quantization with; disjoint from the validation texts."""
    return list(CALIBRATION_TEXTS)


def parse_line(line: str) -> Example:
    """One line of a user's file: plain text, a JSON input, or a JSON `{"inputs", "parameters"}` object."""
    stripped = line.strip()
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        return Example(stripped)
    if not isinstance(value, (str, dict, list)):  # a line such as `42` or `true` is text, not JSON
        return Example(stripped)
    if isinstance(value, dict) and "inputs" in value:
        return Example(value["inputs"], dict(value.get("parameters") or {}))
    return Example(value)


def from_file(path: str | Path, task: str) -> list[Example]:
    """Read `--validation-data`: one example a line; blank lines are skipped."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--validation-data: {path} is not a file")
    lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"--validation-data: {path} holds no examples")
    examples = [parse_line(line) for line in lines]
    if task == "zero-shot-classification":
        labels = {"candidate_labels": list(ZERO_SHOT_LABELS)}
        examples = [e if "candidate_labels" in e.parameters else Example(e.inputs, {**labels, **e.parameters}) for e in examples]
    return examples
