"""Generate the demo pool: instruction rows written by templates, with planted bad rows.

    python examples/make_pool.py            # writes examples/pool.jsonl and examples/pool.parquet

The rows span arithmetic, code, writing, science, cooking, travel, health, finance,
grammar, summarisation, classification, lists and unit conversion; about a quarter
of the responses are deliberately weak (wrong, evasive, truncated or off-topic), so
quality scorers have something to find. Planted bad rows exercise every reject reason.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

TOPICS = ["photosynthesis", "plate tectonics", "the water cycle", "vaccines", "black holes", "inflation",
          "compound interest", "machine learning", "the French Revolution", "supply and demand", "DNA replication",
          "climate change", "the immune system", "recursion", "public key cryptography", "volcanoes",
          "the stock market", "renewable energy", "the printing press", "neural networks"]
FOODS = ["lentil soup", "banana bread", "vegetable curry", "pancakes", "tomato sauce", "fried rice",
         "guacamole", "oatmeal cookies", "mushroom risotto", "chickpea salad"]
PLACES = ["Lisbon", "Kyoto", "Vancouver", "Marrakesh", "Reykjavik", "Buenos Aires", "Prague", "Hanoi",
          "Cape Town", "Edinburgh"]
SUBJECTS = ["autumn leaves", "a quiet harbour", "the first snow", "city lights", "an old bicycle",
            "morning coffee", "a thunderstorm", "a library at night", "migrating birds", "the desert wind"]
ADJ = ["clear", "concise", "friendly", "formal", "persuasive", "detailed"]
WEAK = ["I am not sure about that.", "As an AI, I cannot help with this request.",
        "This is a very interesting question with many possible answers.", "Yes.", "See the documentation."]


def arithmetic(r):
    a, b = r.randint(12, 999), r.randint(3, 99)
    op, val = r.choice([("*", a * b), ("+", a + b), ("-", a - b)])
    good = f"{a} {op} {b} = {val}. " + ("Multiplying digit by digit and adding the partial products gives the result." if op == "*" else "Working column by column from the right gives the result.")
    return f"What is {a} {op} {b}? Show your reasoning briefly.", "", good, f"{a} {op} {b} = {val + r.randint(1, 9)}."


def python_function(r):
    tasks = [("returns the sum of the squares of a list of numbers", "def sum_of_squares(xs):\n    return sum(x * x for x in xs)"),
             ("checks whether a string is a palindrome, ignoring case and spaces", "def is_palindrome(s):\n    t = ''.join(s.lower().split())\n    return t == t[::-1]"),
             ("counts how often each word occurs in a text", "from collections import Counter\n\ndef word_counts(text):\n    return Counter(text.lower().split())"),
             ("returns the n-th Fibonacci number iteratively", "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"),
             ("removes duplicates from a list while keeping the order", "def dedupe(xs):\n    seen = set()\n    return [x for x in xs if not (x in seen or seen.add(x))]"),
             ("flattens a list of lists by one level", "def flatten(xss):\n    return [x for xs in xss for x in xs]")]
    what, code = r.choice(tasks)
    good = f"Here is a straightforward implementation:\n\n```python\n{code}\n```\n\nIt runs in linear time in the size of the input."
    return f"Write a Python function that {what}.", "", good, "```python\ndef f(x):\n    pass\n```"


def explain(r):
    t, level = r.choice(TOPICS), r.choice(["a ten-year-old", "a high-school student", "a busy executive", "a new employee"])
    sentences = [f"{t.capitalize()} is best understood by starting from what it does.",
                 f"At its core, {t} describes a process with a few clear steps.",
                 "Each step depends on the previous one, which is why the order matters.",
                 f"A simple example makes {t} concrete: think of something you see every day that works the same way.",
                 "Experts study it because it explains many things we observe.",
                 "The key idea to remember is cause, process and effect."]
    n = r.randint(2, 6)
    return f"Explain {t} to {level}.", "", " ".join(sentences[:n]), r.choice(WEAK)


def recipe(r):
    f = r.choice(FOODS)
    steps = ["Gather and measure all ingredients.", "Prepare the vegetables or dry ingredients.",
             "Heat the pan or oven to the right temperature.", "Combine the ingredients in order.",
             "Cook until done, tasting as you go.", "Let it rest briefly and serve."]
    k = r.randint(4, 6)
    good = f"To make {f}:\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(steps[:k]))
    return f"How do I make {f} at home?", "", good, f"{f.capitalize()} is delicious."


def travel(r):
    p, days = r.choice(PLACES), r.randint(2, 5)
    plan = "\n".join(f"Day {d + 1}: explore a different neighbourhood of {p}, visit a museum or market, and try a local dish." for d in range(days))
    return f"Plan a {days}-day trip to {p} for a first-time visitor.", "", plan, f"Go to {r.choice(PLACES)} instead."


def poem(r):
    s, form = r.choice(SUBJECTS), r.choice(["haiku", "short poem", "limerick"])
    good = {"haiku": f"{s.capitalize()} at dusk,\nsoft light folding into shade,\nthe day lets go slow.",
            "short poem": f"I watched {s} for a while,\nand time grew wide and still;\nsome moments ask for nothing\nbut the patience to be filled.",
            "limerick": f"There once was {s} so bright,\nit kept the whole town up at night;\nthey opened the door,\nthen wanted some more,\nand danced till the morning's first light."}[form]
    return f"Write a {form} about {s}.", "", good, f"{s} is nice."


def email(r):
    purpose = r.choice(["ask my manager for a day off next Friday", "follow up on an unpaid invoice",
                        "thank a colleague for their help on a project", "reschedule a meeting to next week",
                        "request a reference letter from a former professor"])
    tone = r.choice(ADJ)
    good = (f"Subject: Request\n\nHello,\n\nI am writing to {purpose}. I wanted to reach out early so that there is "
            "enough time to plan around it. Please let me know if you need anything else from me.\n\nBest regards,\nAlex")
    return f"Write a {tone} email to {purpose}.", "", good, "Hi. Thanks. Bye."


def grammar(r):
    wrong, right = r.choice([("She don't like apples.", "She doesn't like apples."),
                             ("Their going to the park tomorrow.", "They're going to the park tomorrow."),
                             ("Me and him was late.", "He and I were late."),
                             ("The data shows that less people came.", "The data show that fewer people came."),
                             ("Its a long way to the station.", "It's a long way to the station.")])
    return "Correct the grammar of the following sentence.", wrong, right, wrong


def summarise(r):
    t = r.choice(TOPICS)
    para = " ".join(r.sample([
        f"Researchers have long been interested in {t}.", "Early studies were small and often contradictory.",
        "Over the last decade, larger data sets changed the picture considerably.",
        "Several groups now agree on the main mechanisms, though details remain debated.",
        "Practical applications have followed, from education to industry.",
        "Critics argue that some claims are still overstated.",
        "Funding has grown steadily, and new instruments allow finer measurements.",
        "Public interest rose after a series of widely shared articles."], k=r.randint(4, 8)))
    good = f"The text says that understanding of {t} has matured: larger studies settled the main mechanisms, applications followed, and some debate remains."
    return "Summarise the following paragraph in one sentence.", para, good, para


def sentiment(r):
    text, label = r.choice([("The delivery was late and the box was damaged.", "negative"),
                            ("Absolutely loved the service, will come back!", "positive"),
                            ("The product works as described.", "neutral"),
                            ("Worst purchase I have made this year.", "negative"),
                            ("Great value for the price and fast shipping.", "positive")])
    return "Classify the sentiment of this review as positive, negative or neutral.", text, f"The sentiment is {label}.", "It is a review."


def listing(r):
    n, thing = r.randint(3, 7), r.choice(["tips for better sleep", "ways to save money on groceries",
                                          "ideas for a rainy afternoon", "habits of effective teams",
                                          "questions to ask in a job interview"])
    items = [f"{i + 1}. A practical suggestion about {thing.split()[-1]} number {i + 1}, with a short reason why it helps." for i in range(n)]
    return f"List {n} {thing}.", "", "\n".join(items), items[0]


def convert(r):
    v = r.randint(1, 250)
    unit, factor, target = r.choice([("kilometres", 0.621371, "miles"), ("kilograms", 2.20462, "pounds"),
                                     ("litres", 0.264172, "US gallons"), ("metres", 3.28084, "feet")])
    return f"Convert {v} {unit} to {target}.", "", f"{v} {unit} is about {v * factor:.2f} {target} (1 {unit[:-1]} = {factor} {target}).", f"{v} {unit} is {v} {target}."


def finance(r):
    p, rate, years = r.choice([1000, 2500, 5000, 10000]), r.choice([2, 3, 4, 5, 7]), r.randint(2, 20)
    val = p * (1 + rate / 100) ** years
    return (f"If I invest ${p} at {rate}% interest compounded yearly, how much will I have after {years} years?", "",
            f"Using A = P(1 + r)^t: {p} x (1 + {rate / 100})^{years} = ${val:,.2f}.", f"You will have ${p + p * rate / 100 * years:,.2f}.")


def health(r):
    q = r.choice(["How much water should an adult drink per day?", "What are simple ways to reduce stress?",
                  "Why is regular exercise important?", "How can I improve my posture at a desk?"])
    good = ("General guidance: small, consistent habits work best. Start with an easy change, keep it for two weeks, "
            "then add another. For personal medical questions, consult a doctor.")
    return q, "", good, "Just ignore it."


FAMILIES = [arithmetic, python_function, explain, recipe, travel, poem, email, grammar, summarise, sentiment,
            listing, convert, finance, health]


def make_rows(n: int = 560, seed: int = 7, weak_share: float = 0.25) -> list[dict]:
    r = random.Random(seed)
    rows = []
    for i in range(n):
        fam = FAMILIES[i % len(FAMILIES)]
        instruction, inp, good, weak = fam(r)
        weak_row = r.random() < weak_share
        rows.append({"id": f"ex-{i:04d}", "instruction": instruction, "input": inp,
                     "output": weak if weak_row else good, "domain": fam.__name__, "planted_quality": "weak" if weak_row else "good"})
    return rows


def plant_bad_rows(rows: list[dict]) -> list:
    """Append rows for every reject reason; returns JSON lines (str) and raw invalid lines (bytes)."""
    bad = []
    for i in range(5):
        bad.append({"id": f"bad-empty-{i}", "instruction": ["", "   ", None, "\n", "\t"][i], "input": "", "output": "Some answer.", "domain": "planted"})
    for i in range(6):
        bad.append({"id": f"bad-nooutput-{i}", "instruction": f"Describe planted case number {i}.", "input": "", "output": None if i % 2 else "", "domain": "planted"})
    for i in range(5):
        dup = dict(rows[i * 17])
        dup["instruction"] = dup["instruction"] + " (resubmitted)"
        bad.append(dup)  # same id as an earlier row: duplicate_id
    for i in range(4):
        bad.append({"id": f"bad-long-{i}", "instruction": "Summarise this document.", "input": "lorem ipsum dolor sit amet " * 1000, "output": "A summary.", "domain": "planted"})
    bad.append({"id": "bad-type-0", "instruction": 12345, "input": "", "output": "A number is not an instruction.", "domain": "planted"})
    return bad


def write_heldout(n: int, path: Path, seed: int = 1234) -> None:
    """Rows for `selectray eval --eval`: the pool's families drawn from another seed, without
    any row whose text equals a pool row's (eval drops those anyway, and counts them)."""
    pool = {(x["instruction"], x["input"], x["output"]) for x in make_rows()}
    rows = [x for x in make_rows(n, seed=seed) if (x["instruction"], x["input"], x["output"]) not in pool]
    for i, x in enumerate(rows):
        x["id"] = f"heldout-{i:04d}"
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    print(f"wrote {len(rows)} held-out rows to {path} ({n - len(rows)} equal to a pool row left out)")


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(sys.argv) == 4 and sys.argv[1] == "--heldout":  # make_pool.py --heldout N FILE.jsonl
        write_heldout(int(sys.argv[2]), Path(sys.argv[3]))
        return
    rows = make_rows()
    bad = plant_bad_rows(rows)
    r = random.Random(11)
    mixed = rows + bad
    r.shuffle(mixed)
    lines = [json.dumps(x).encode() for x in mixed]
    lines.insert(100, b'{"id": "bad-encoding-0", "instruction": "caf\xe9 \xff\xfe broken bytes", "output": "x"}')
    lines.insert(300, b'{"id": "bad-json-0", "instruction": "unterminated')
    (HERE / "pool.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    # The Parquet copy holds the same JSON-valid rows (Parquet cannot hold broken lines).
    clean = [x for x in mixed if not isinstance(x.get("instruction"), int)]
    pq.write_table(pa.Table.from_pylist(clean), HERE / "pool.parquet")
    print(f"wrote {len(lines)} lines to pool.jsonl and {len(clean)} rows to pool.parquet")


if __name__ == "__main__":
    main()
